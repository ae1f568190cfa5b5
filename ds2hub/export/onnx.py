"""Export to ONNX (`ds2hub export MODEL OUT_DIR`, docs/guide/export.md): `model.onnx`, the
whole-utterance network (features (B, F, T) float32, lengths (B,) int64 -> logits (B, T', V),
output lengths (B,); batch and time dynamic), for forward-only models `stream_step.onnx`
(`StreamingStep`), and `ds2hub_export.json`: the front end (with the global `mean`/`std` and the
`mel_fbanks`, one row of FFT-bin weights per filter), the vocabulary (blank 0), the state shapes
and the step's frame bookkeeping.

The STFT stays outside the graph. Exported with torch's TorchScript-based exporter, which traces
the packed recurrent layers into ONNX `GRU`/`LSTM` nodes; needs the `export` extra.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ds2hub.arguments import ArgumentParser
from ds2hub.errors import ConfigError
from ds2hub.extras import require
from ds2hub.inference.recognizer import SpeechRecognizer, from_pretrained
from ds2hub.model.deepspeech2 import DeepSpeech2
from ds2hub.model.streaming import (
    UNKNOWN_LENGTH,
    check_streamable,
    initial_state,
    state_names,
    stream_step,
)
from ds2hub.paths import missing_local

OPSET = 17
BIG = UNKNOWN_LENGTH  # `total_frames` while the utterance has not ended


class StreamingStep(nn.Module):
    """The model's incremental pass (`ds2hub.model.streaming.stream_step`) for one stream and a
    fixed chunk of `chunk_frames` feature frames, as a module ONNX can trace: `chunk_frames`
    frames in, `chunk_frames / stride` logits out, tagged with their frame index. Keep those with
    0 <= index < the utterance's output length; they equal the whole-utterance pass.

    Inputs: features (1, F, K); frames_in (1,) int64, feature frames fed before this step (a
    multiple of K); total_frames (1,) int64, the utterance's feature frames once known, else
    `BIG`; then the states (`ds2hub.model.streaming.state_names`). To finish, feed zero chunks
    with total_frames set until the last output index reaches the output length.
    Outputs: logits (1, K/stride, V); frame_index (K/stride,) int64; the new states.
    """

    def __init__(self, model: DeepSpeech2, chunk_frames: int) -> None:
        super().__init__()
        check_streamable(model)
        stride = model.config.time_stride
        if chunk_frames < stride or chunk_frames % stride:
            raise ConfigError(
                f"streaming export: the chunk ({chunk_frames} frames) must be a positive multiple "
                f"of the model's time stride ({stride} frames)"
            )
        self.model = model
        self.eval()  # the exporter restores this mode afterwards, the network's batch norms too
        self.chunk_frames = chunk_frames

    def initial_state(self) -> list[torch.Tensor]:
        """A fresh stream's states, in `state_names` order."""
        return initial_state(self.model)

    def forward(self, features, frames_in, total_frames, *states):
        logits, index, _, new_states = stream_step(
            self.model, features, frames_in, total_frames, list(states), unrolled=True
        )
        return (logits, index[0], *new_states)


def _check_output(out: Path, overwrite: bool) -> None:
    """Writes only into an empty or new folder, or over an earlier export with `overwrite`."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"export folder {str(out)!r} is a file")
    if not any(out.iterdir()):
        return
    if not (out / "ds2hub_export.json").is_file():
        raise ConfigError(
            f"export folder {str(out)!r} is not empty and holds no earlier export; "
            "choose a new or empty folder"
        )
    if not overwrite:
        raise ConfigError(f"{str(out)!r} holds an earlier export; pass --overwrite to replace it")


def _export(module: nn.Module, args: tuple, path: Path, **names) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on packed sequences and sizes
        torch.onnx.export(module, args, path, opset_version=OPSET, dynamo=False, **names)


def export_onnx(
    recognizer: SpeechRecognizer,
    out_dir: str | Path,
    chunk_frames: int | None = 16,
    overwrite: bool = False,
) -> list[Path]:
    """Writes `model.onnx`, for forward-only models `stream_step.onnx` (chunks of `chunk_frames`
    feature frames; None: no step), and `ds2hub_export.json` into `out_dir` (new or empty, or an
    earlier export with `overwrite`).

    Returns:
        the files written.
    """
    require("onnx", "export")
    model = recognizer.model.eval()
    if model.config.rnn_type == "rnn":
        raise ConfigError(
            "ONNX export of the whole-utterance graph supports gru and lstm layers; the clipped "
            "ReLU rnn loops over time in Python, which a traced graph would fix to one length"
        )
    out = Path(out_dir)
    _check_output(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    n_features = model.config.n_features
    _export(
        model,
        (torch.randn(2, n_features, 40), torch.tensor([40, 31])),
        out / "model.onnx",
        input_names=["features", "lengths"],
        output_names=["logits", "output_lengths"],
        dynamic_axes={
            "features": {0: "batch", 2: "frames"},
            "lengths": {0: "batch"},
            "logits": {0: "batch", 1: "output_frames"},
            "output_lengths": {0: "batch"},
        },
    )
    written = [out / "model.onnx"]
    info = {
        "format": "ds2hub-onnx/1",
        "arch": model.config.to_dict(),
        "features": recognizer.features.to_dict(),
        "vocab": list(recognizer.tokenizer.vocab),
        "blank_id": recognizer.tokenizer.blank_id,
        "model": {"inputs": ["features", "lengths"], "outputs": ["logits", "output_lengths"]},
    }
    if recognizer.frontend.mel_fbanks is not None:  # (n_mels, FFT bins): power in, filters out
        info["mel_fbanks"] = recognizer.frontend.mel_fbanks.T.tolist()
    if recognizer.features.global_stats:
        info["mean"] = recognizer.frontend.mean.tolist()
        info["std"] = recognizer.frontend.std.tolist()
    if chunk_frames is not None and not model.config.bidirectional:
        step = StreamingStep(model, chunk_frames)
        state = step.initial_state()
        names = state_names(model)
        args = (
            torch.zeros(1, n_features, chunk_frames),
            torch.zeros(1, dtype=torch.long),
            torch.full((1,), BIG, dtype=torch.long),
            *state,
        )
        _export(
            step,
            args,
            out / "stream_step.onnx",
            input_names=["features", "frames_in", "total_frames", *names],
            output_names=["logits", "frame_index", *[f"next_{n}" for n in names]],
        )
        written.append(out / "stream_step.onnx")
        info["stream_step"] = {
            "chunk_frames": chunk_frames,
            "time_stride": model.config.time_stride,
            "states": {n: list(s.shape) for n, s in zip(names, state)},
            "big": BIG,
            "usage": (
                "initial states are zeros; feed chunk_frames normalised feature frames with "
                "frames_in = frames fed before; total_frames = the utterance's frames once known "
                "(else big); pass next_* back as the states; keep logits whose frame_index is in "
                "[0, output length); to finish, feed zero chunks with total_frames set until "
                "frame_index reaches the output length"
            ),
        }
    (out / "ds2hub_export.json").write_text(json.dumps(info, indent=1))
    written.append(out / "ds2hub_export.json")
    return written


def main(argv: list[str]) -> None:
    """`ds2hub export MODEL OUT_DIR`."""
    parser = ArgumentParser(
        prog="ds2hub export",
        description="Export a model (hub folder, hub id or .ckpt) to ONNX; forward-only models "
        "also get their streaming step.",
    )
    parser.add_argument("model", help="hub folder, hub id, or a .ckpt from `ds2hub fit`")
    parser.add_argument("out_dir", help="folder to write model.onnx (+ stream_step.onnx) into")
    parser.add_argument(
        "--chunk-ms",
        type=float,
        default=160.0,
        help="streaming step size in ms (a multiple of the model's output frame; 0: no step)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export")
    args = parser.parse_args(argv)
    if missing_local(args.model):
        raise ConfigError(f"model {args.model!r} does not exist")
    recognizer = from_pretrained(args.model)
    hop_ms = recognizer.features.hop_ms
    frames = args.chunk_ms / hop_ms
    if args.chunk_ms and (frames != int(frames) or frames < 1):
        raise ConfigError(f"--chunk-ms must be a multiple of the {hop_ms:g} ms hop")
    chunk = int(frames) if args.chunk_ms else None
    for path in export_onnx(recognizer, args.out_dir, chunk, args.overwrite):
        print(f"wrote {path}")


__all__ = ["BIG", "StreamingStep", "export_onnx", "main"]
