"""Inference: a trained model as a `SpeechRecognizer` (features + network + decoder), file and
array transcription, and streaming sessions. Imports nothing of training: neither Lightning nor
`datasets`."""
