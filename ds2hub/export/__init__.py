"""`ds2hub export`: a trained model as ONNX (whole-utterance and streaming-step graphs)."""
