"""Export to ONNX: the whole-utterance network, and for forward-only models the streaming step.

    ds2hub export MODEL OUT_DIR [--chunk-ms 160]

writes

- `model.onnx`: features (B, F, T) float32 and lengths (B,) int64 -> logits (B, T', V) and output
  lengths (B,), batch and time dynamic, for bidirectional and forward-only models;
- `stream_step.onnx` (forward-only models): one streaming step over a fixed chunk of K feature
  frames, its state as inputs and outputs (see `StreamingStep`);
- `ds2hub_export.json`: what a runtime needs around them: the front end (`features`; for
  `normalization: global` the per-bin `mean`/`std` the features are normalised with; for
  `n_mels` the filterbank `mel_fbanks`, one row of FFT-bin weights per filter), the
  vocabulary (id -> token, blank 0), the state shapes and the step's frame bookkeeping.

The network's input is the front end's output (log power spectrogram or log-mel filterbank,
normalised as `features.normalization` says, see `ds2hub.features`): the STFT stays outside the
graph. Exported with torch's ONNX exporter (TorchScript-based: it traces the packed
recurrent layers into ONNX `GRU`/`LSTM` nodes with sequence lengths); needs the `onnx` package
(`pip install ds2hub[export]`), and `onnxruntime` to run the result.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ds2hub.errors import ConfigError
from ds2hub.model.conv import CLIP, conv_output_length
from ds2hub.model.deepspeech2 import DeepSpeech2
from ds2hub.model.recurrent import ClippedReLURNN
from ds2hub.model.streaming import check_streamable, conv_layout

if TYPE_CHECKING:
    from ds2hub.inference.recognizer import SpeechRecognizer

OPSET = 17
BIG = 1 << 40  # `total_frames` while the utterance has not ended


class StreamingStep(nn.Module):
    """One fixed-size streaming step of a forward-only `DeepSpeech2`, as a pure function of its
    inputs (what ONNX needs): `chunk_frames` feature frames in, `chunk_frames / stride` logits out.

    Unlike `ds2hub.model.streaming.stream_step` (any chunk size, outputs as soon as possible), the
    step keeps every shape fixed: each conv layer's buffer starts further left (zeros), so its
    first outputs lie before the utterance (negative frame indices); every output comes
    `delay` frames after the step that could first emit it. Outputs are tagged with their frame
    index: keep those with 0 <= index < the utterance's output length. Frames before the start and
    past the end are masked exactly where the whole-utterance pass reads zero padding, so the
    kept logits equal it.

    Inputs: features (1, F, K); frames_in (1,) int64, feature frames fed before this step (a
    multiple of K); total_frames (1,) int64, the utterance's feature frames once known, else
    `BIG`; then the states (see `state_names`). To finish, feed zero chunks with total_frames
    set until the last output index reaches the output length.
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
        self.train(model.training)
        self.chunk_frames = chunk_frames
        self.layout = conv_layout(model)
        self.tau = model.rowconv.lookahead if model.rowconv is not None else 0
        self.kind = "rnn" if isinstance(model.rnns[0].rnn, ClippedReLURNN) else None
        self.kind = self.kind or ("lstm" if isinstance(model.rnns[0].rnn, nn.LSTM) else "gru")

    def state_names(self) -> list[str]:
        names = [f"conv{i}" for i in range(len(self.layout))] + ["hidden"]
        names += ["cell"] if self.kind == "lstm" else []
        return names + (["rowconv"] if self.tau else [])

    def initial_state(self) -> list[torch.Tensor]:
        """A fresh stream's states, in `state_names` order."""
        param = next(self.model.parameters())
        states, channels, freq = [], 1, self.model.config.n_features
        for (_, _, width, _), conv in zip(self.layout, self.model.conv.convs):
            states.append(param.new_zeros(1, channels, freq, width))
            channels = conv.out_channels
            freq = conv_output_length(freq, conv.kernel_size[0], conv.stride[0])
        hidden = self.model.config.rnn_hidden
        states.append(param.new_zeros(len(self.model.rnns), 1, hidden))
        if self.kind == "lstm":
            states.append(param.new_zeros(len(self.model.rnns), 1, hidden))
        if self.tau:
            states.append(param.new_zeros(1, self.tau, hidden))
        return states

    @property
    def output_delay(self) -> int:
        """Output frames between the first index a step emits and 0 (front padding + lookahead)."""
        return -self.layout[-1][3] + self.tau

    def _cell(self, layer, x_t, h, c):
        """One time step of a recurrent layer; x_t is its input projection (1, G*H)."""
        rnn = layer.rnn
        if self.kind == "rnn":
            return torch.clamp(x_t + rnn.recurrent[0](h), 0.0, CLIP), c
        gates_h = h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
        if self.kind == "gru":  # torch's gate order: reset, update, new
            xr, xz, xn = x_t.chunk(3, dim=-1)
            hr, hz, hn = gates_h.chunk(3, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            return (1 - z) * n + z * h, c
        i, f, g, o = (x_t + gates_h).chunk(4, dim=-1)  # LSTM: input, forget, cell, output
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, features, frames_in, total_frames, *states):
        model = self.model
        n_conv = len(self.layout)
        conv_states = list(states[:n_conv])
        hidden = states[n_conv]
        cell = states[n_conv + 1] if self.kind == "lstm" else None
        rowconv = states[-1] if self.tau else None
        new_states = []
        x = features.unsqueeze(1)  # (1, 1, F, K)
        done = torch.ones_like(frames_in)  # cumulative stride so far
        length = total_frames
        for (kt, st, _, first), conv, norm, buf in zip(
            self.layout, model.conv.convs, model.conv.norms, conv_states
        ):
            full = torch.cat([buf, x], dim=-1)  # (1, C, F, W + k)
            k = x.size(-1) // st  # outputs of this step
            y = nn.functional.conv2d(
                full[..., : full.size(-1) - (full.size(-1) - kt) % st],
                conv.weight,
                conv.bias,
                (conv.stride[0], st),
                (conv.padding[0], 0),
            )[..., :k]  # (1, C', F', k)
            if not isinstance(norm, nn.Identity):
                b, c, f, t = y.shape
                flat = y.permute(0, 3, 1, 2).reshape(b * t, c, f)
                y = norm.bn(flat).view(b, t, c, f).permute(0, 2, 3, 1)
            y = torch.clamp(y, 0.0, CLIP)
            done = done * st
            length = (length + 2 * (kt // 2) - kt) // st + 1
            index = torch.arange(k) + first + frames_in // done  # (k,)
            valid = (index >= 0) & (index < length)
            y = y * valid.to(y.dtype)
            new_states.append(full[..., k * st :])
            x = y
        b, c, f, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * f)  # (1, k, C*F')
        hs, cs = [], []
        for i, layer in enumerate(model.rnns):
            if layer.norm is not None:
                x = layer.norm.bn(x[0])[None]
            if self.kind == "rnn":
                proj = layer.rnn.input_proj[0](x)
            else:
                proj = x @ layer.rnn.weight_ih_l0.T + layer.rnn.bias_ih_l0
            h = hidden[i]  # (1, H)
            c_state = cell[i] if cell is not None else None
            outs = []
            for step in range(x.size(1)):  # fixed K: unrolled in the graph
                h_new, c_new = self._cell(layer, proj[:, step], h, c_state)
                keep = valid[step]
                h = torch.where(keep, h_new, h)
                if c_state is not None:
                    c_state = torch.where(keep, c_new, c_state)
                outs.append(h * keep.to(h.dtype))
            x = torch.stack(outs, dim=1)  # (1, k, H)
            hs.append(h)
            cs.append(c_state)
        new_states.append(torch.stack(hs))  # (L, 1, H)
        if cell is not None:
            new_states.append(torch.stack(cs))
        index = torch.arange(x.size(1)) + self.layout[-1][3] + frames_in // done
        if self.tau:
            window = torch.cat([rowconv, x], dim=1)  # (1, tau + k, H)
            frames = window.unfold(1, self.tau + 1, 1)  # (1, k, H, tau + 1)
            x = (frames * model.rowconv.weight[:, 0]).sum(dim=-1)
            new_states.append(window[:, -self.tau :])
            index = index - self.tau
        x = x[0]
        if model.head_norm is not None:
            x = model.head_norm.bn(x)
        if model.fc is not None:
            x = torch.clamp(model.fc(x), 0.0, CLIP)
        return (model.output(x)[None], index, *new_states)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigError(
            "ONNX export needs the onnx package: pip install 'ds2hub[export]'"
        ) from None


def _check_exportable(model: DeepSpeech2) -> None:
    if model.config.rnn_type == "rnn":
        raise ConfigError(
            "ONNX export of the whole-utterance graph supports gru and lstm layers; the clipped "
            "ReLU rnn loops over time in Python, which a traced graph would fix to one length"
        )


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
    _require_onnx()
    model = recognizer.model.eval()
    _check_exportable(model)
    out = Path(out_dir)
    _check_output(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    n_features = model.config.n_features
    features = torch.randn(2, n_features, 40)
    lengths = torch.tensor([40, 31])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on packed sequences and sizes
        torch.onnx.export(
            model,
            (features, lengths),
            out / "model.onnx",
            input_names=["features", "lengths"],
            output_names=["logits", "output_lengths"],
            dynamic_axes={
                "features": {0: "batch", 2: "frames"},
                "lengths": {0: "batch"},
                "logits": {0: "batch", 1: "output_frames"},
                "output_lengths": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    written.append(out / "model.onnx")
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
        # eval() on the wrapper too: the exporter restores the module's mode afterwards, and a
        # new module is in training mode (which would put the network's batch norms back in it).
        step = StreamingStep(model, chunk_frames).eval()
        state = step.initial_state()
        names = step.state_names()
        args = (
            torch.zeros(1, n_features, chunk_frames),
            torch.zeros(1, dtype=torch.long),
            torch.full((1,), BIG, dtype=torch.long),
            *state,
        )
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                step,
                args,
                out / "stream_step.onnx",
                input_names=["features", "frames_in", "total_frames", *names],
                output_names=["logits", "frame_index", *[f"next_{n}" for n in names]],
                opset_version=OPSET,
                dynamo=False,
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
    parser = argparse.ArgumentParser(
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
    local = args.model.startswith((".", "/", "~")) or args.model.count("/") > 1
    if local and not Path(args.model).expanduser().exists():
        raise ConfigError(f"model {args.model!r} does not exist")
    from ds2hub.inference.recognizer import from_pretrained

    recognizer = from_pretrained(args.model)
    chunk = None
    if args.chunk_ms:
        hop_ms = recognizer.features.hop_ms
        frames = args.chunk_ms / hop_ms
        if frames != int(frames) or frames < 1:
            raise ConfigError(f"--chunk-ms must be a multiple of the {hop_ms:g} ms hop")
        chunk = int(frames)
    for path in export_onnx(recognizer, args.out_dir, chunk, args.overwrite):
        print(f"wrote {path}")


__all__ = ["BIG", "StreamingStep", "export_onnx", "main"]
