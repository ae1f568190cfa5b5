"""The incremental forward pass of a forward-only Deep Speech 2 (section 7): `stream_step`, used
by streaming sessions (`ds2hub.inference.streaming`) and the exported ONNX step.

What crosses a chunk boundary is carried in state tensors (`state_names`), and the logits equal
those of the whole-utterance forward pass (eval mode): convolutions keep the input frames their
next output still needs (`conv_layout`), recurrent layers their hidden state (frozen on frames
outside the utterance), the row convolution its last `lookahead` inputs; eval-mode batch norm is
a per-frame affine map. Every shape is fixed by the chunk size, so the step traces to ONNX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

from ds2hub.model.conv import CLIP, conv_output_length
from ds2hub.model.deepspeech2 import DeepSpeech2

# `total_frames` while the utterance has not ended: larger than any stream's frame count, small
# enough that the conv length arithmetic stays exact in int64 and in ONNX.
UNKNOWN_LENGTH = 1 << 40


class StreamingError(ValueError):
    """Raised for a model or call that cannot stream (bidirectional, training mode, ...)."""


def check_streamable(model: DeepSpeech2) -> None:
    """Raises `StreamingError` unless `model` can stream exactly."""
    if model.config.bidirectional:
        raise StreamingError(
            "this model is bidirectional: its backward recurrent layers read the utterance from "
            "its end, so it cannot transcribe audio as it arrives; train a forward-only model "
            "(arch.bidirectional: false, e.g. with a row convolution: arch.lookahead: 20, the "
            "`paper-streaming` preset) to stream"
        )
    if model.training:
        raise StreamingError(
            "streaming needs the model in eval mode (batch norm with running statistics): "
            "call .eval() first"
        )


def conv_layout(model: DeepSpeech2) -> list[tuple[int, int, int, int]]:
    """Per conv layer: (kernel, stride, buffer width, index of its first output).

    A layer's buffer holds the `width` input frames before the chunk (zeros at the start), so its
    first window is aligned to an output index (negative indices, the left padding, are computed
    and zeroed). A chunk of a multiple of the stride gives chunk / stride outputs.
    """
    layout, first_in = [], 0
    for kt, st in zip(model.config.conv_kernel_time, model.config.conv_stride_time):
        pad = kt // 2
        extra = (first_in - pad - 1) % st  # so that (start + pad) is a multiple of the stride
        width = kt - st + extra
        start = first_in - width
        first_out = (start + pad) // st
        layout.append((kt, st, width, first_out))
        first_in = first_out
    return layout


def state_names(model: DeepSpeech2) -> list[str]:
    """Names of the state tensors, in `stream_step`'s order: `conv0..` (B, C, F, width) per conv
    layer, `hidden` (L, B, H), `cell` (L, B, H) for LSTMs, `rowconv` (B, lookahead, H)."""
    names = [f"conv{i}" for i in range(len(model.conv.convs))] + ["hidden"]
    names += ["cell"] if model.config.rnn_type == "lstm" else []
    return names + (["rowconv"] if model.rowconv is not None else [])


def batch_dims(model: DeepSpeech2) -> list[int]:
    """The batch dimension of each state tensor (`state_names` order)."""
    return [1 if name in ("hidden", "cell") else 0 for name in state_names(model)]


def initial_state(model: DeepSpeech2, batch: int = 1) -> list[torch.Tensor]:
    """A fresh stream's states (`state_names` order): zeros, as the whole pass's left padding."""
    check_streamable(model)
    param = next(model.parameters())
    states, channels, freq = [], 1, model.config.n_features
    for (_, _, width, _), conv in zip(conv_layout(model), model.conv.convs):
        states.append(param.new_zeros(batch, channels, freq, width))
        channels = conv.out_channels
        freq = conv_output_length(freq, conv.kernel_size[0], conv.stride[0], conv.padding[0])
    hidden = model.config.rnn_hidden
    states.append(param.new_zeros(len(model.rnns), batch, hidden))
    if model.config.rnn_type == "lstm":
        states.append(param.new_zeros(len(model.rnns), batch, hidden))
    if model.rowconv is not None:
        states.append(param.new_zeros(batch, model.rowconv.lookahead, hidden))
    return states


def flush_frames(model: DeepSpeech2) -> int:
    """Zero feature frames (a multiple of the time stride) that, fed after an utterance's last
    frame with `total_frames` set, emit all its remaining outputs (conv padding, lookahead)."""
    frames, scale = 0, 1
    for kt, st in zip(model.config.conv_kernel_time, model.config.conv_stride_time):
        frames += (kt // 2) * scale
        scale *= st
    frames += (model.config.lookahead + 2) * scale
    return -(-frames // scale) * scale


def _keep(x: torch.Tensor, offsets: torch.Tensor | None, width: int) -> torch.Tensor:
    """The `width` frames (last dim) of (B, ..., T) x from each stream's offset (its real new
    frames; None: all of the chunk's): what its next step's buffer holds."""
    if offsets is None:
        return x[..., x.size(-1) - width :]
    index = offsets[:, None] + torch.arange(width, device=x.device)  # (B, width)
    index = index.view(x.size(0), *([1] * (x.dim() - 2)), width).expand(*x.shape[:-1], width)
    return x.gather(-1, index)


def _cell(kind: str, rnn: torch.nn.Module, x_t, h, c):
    """One time step of a recurrent layer; x_t is its input projection (B, G*H)."""
    if kind == "rnn":
        return torch.clamp(x_t + rnn.recurrent[0](h), 0.0, CLIP), c
    gates_h = h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
    if kind == "gru":  # torch's gate order: reset, update, new
        xr, xz, xn = x_t.chunk(3, dim=-1)
        hr, hz, hn = gates_h.chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h, c
    i, f, g, o = (x_t + gates_h).chunk(4, dim=-1)  # LSTM: input, forget, cell, output
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _recurrent_unrolled(kind, rnn, x, valid, h, c):
    """The recurrence frame by frame, frozen on invalid frames: fixed shapes, so it traces."""
    proj = rnn.project(x, 0, None) if kind == "rnn" else x @ rnn.weight_ih_l0.T + rnn.bias_ih_l0
    outs = []
    for t in range(x.size(1)):  # fixed K: unrolled in a traced graph
        h_new, c_new = _cell(kind, rnn, proj[:, t], h, c)
        keep = valid[:, t, None]
        h = torch.where(keep, h_new, h)
        if c is not None:
            c = torch.where(keep, c_new, c)
        outs.append(h * keep.to(h.dtype))
    return torch.stack(outs, dim=1), h, c


def _recurrent_packed(kind, rnn, x, valid, h, c):
    """The same recurrence with torch's fused kernels: each stream's valid frames (one run of
    them) are packed, so the layer never sees a frame outside the utterance."""
    n = valid.sum(dim=1)  # (B,)
    active = (n > 0).nonzero().flatten().tolist()
    out = x.new_zeros(*x.shape[:2], h.size(-1))
    if not active:
        return out, h, c
    first = valid.int().argmax(dim=1).tolist()
    counts = n.tolist()
    runs = [x[b, first[b] : first[b] + counts[b]] for b in active]
    packed = pack_sequence(runs, enforce_sorted=False)
    h0 = h[active][None]  # (1, A, H)
    if kind == "lstm":
        y, (hn, cn) = rnn(packed, (h0, c[active][None]))
        c = c.index_copy(0, torch.tensor(active, device=c.device), cn[0])
    else:
        y, hn = rnn(packed, h0)
    y, _ = pad_packed_sequence(y, batch_first=True)  # (A, max n, H)
    h = h.index_copy(0, torch.tensor(active, device=h.device), hn[0])
    for k, b in enumerate(active):
        out[b, first[b] : first[b] + counts[b]] = y[k, : counts[b]]
    return out, h, c


def stream_step(
    model: DeepSpeech2,
    features: torch.Tensor,
    frames_in: torch.Tensor,
    total_frames: torch.Tensor,
    states: list[torch.Tensor],
    counts: torch.Tensor | None = None,
    unrolled: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Advances B streams by one chunk of feature frames each, in one batched pass.

    Args:
        model: a forward-only `DeepSpeech2` in eval mode (`check_streamable`).
        features: (B, F, K) new normalised feature frames, K a multiple of the time stride S.
        frames_in: (B,) int64 feature frames each stream was fed before (multiples of S).
        total_frames: (B,) int64 the utterance's feature frames once known, else
            `UNKNOWN_LENGTH`.
        states: the streams' states (`initial_state`, then the previous step's).
        counts: (B,) int64 frames of each chunk that are real (multiples of S; the rest is
            padding to the longest chunk of the batch); None: all K.
        unrolled: run the recurrence frame by frame, as a traced graph must (the ONNX step);
            otherwise torch's fused recurrent kernels over each stream's valid frames.
    Returns:
        logits (B, K/S, V); index (B, K/S) int64, each output's frame index in the utterance;
        valid (B, K/S) bool, the outputs to keep (0 <= index < output length, within the
        stream's count); and the new states. Each output index is valid in exactly one step.
    """
    n_conv = len(model.conv.convs)
    kind = model.config.rnn_type
    hidden = states[n_conv]
    cell = states[n_conv + 1] if kind == "lstm" else None
    rowconv = states[-1] if model.rowconv is not None else None
    new_states = []
    x = features.unsqueeze(1)  # (B, 1, F, K)
    stride = 1  # cumulative stride of the layers so far
    length, count = total_frames, counts
    for (kt, st, width, first), conv, norm, buf in zip(
        conv_layout(model), model.conv.convs, model.conv.norms, states[:n_conv]
    ):
        full = torch.cat([buf, x], dim=-1)  # (B, C, F, width + k_in)
        new_states.append(_keep(full, count, width))  # what the next chunk's windows start with
        y = F.conv2d(full, conv.weight, conv.bias, (conv.stride[0], st), (conv.padding[0], 0))
        if not isinstance(norm, torch.nn.Identity):
            b, c, f, t = y.shape
            flat = y.permute(0, 3, 1, 2).reshape(b * t, c, f)  # (B*T, C, F)
            y = norm.bn(flat).view(b, t, c, f).permute(0, 2, 3, 1)
        y = torch.clamp(y, 0.0, CLIP)  # (B, C', F', k): k = k_in / st outputs
        stride *= st
        length = conv_output_length(length, kt, st)
        position = torch.arange(y.size(-1), device=y.device)
        index = position + (first + frames_in // stride)[:, None]  # (B, k)
        valid = (index >= 0) & (index < length[:, None])  # zeros where the whole pass pads
        if count is not None:
            count = count // st  # outputs of the real frames
            valid = valid & (position < count[:, None])
        x = y * valid[:, None, None, :].to(y.dtype)
    b, c, f, t = x.shape
    x = x.permute(0, 3, 1, 2).reshape(b, t, c * f)  # (B, k, C*F')
    hs, cs = [], []
    for i, layer in enumerate(model.rnns):
        if layer.norm is not None:
            x = layer.norm.bn(x.reshape(b * t, -1)).view(b, t, -1)
        recur = _recurrent_unrolled if unrolled or kind == "rnn" else _recurrent_packed
        x, h, c_i = recur(kind, layer.rnn, x, valid, hidden[i], None if cell is None else cell[i])
        hs.append(h)
        cs.append(c_i)
    new_states.append(torch.stack(hs))  # (L, B, H)
    if cell is not None:
        new_states.append(torch.stack(cs))
    if model.rowconv is not None:
        tau = model.rowconv.lookahead
        window = torch.cat([rowconv, x], dim=1)  # (B, tau + k, H)
        frames = window.unfold(1, tau + 1, 1)  # (B, k, H, tau + 1)
        # r_t = sum_j W[:, j] * h_{t+j}: the window product is cheaper than a grouped conv1d on
        # the few frames of a chunk.
        x = (frames * model.rowconv.weight[:, 0]).sum(dim=-1)  # (B, k, H)
        kept = window.transpose(1, 2)  # (B, H, tau + k)
        new_states.append(_keep(kept, count, tau).transpose(1, 2))
        index = index - tau
        valid = (index >= 0) & (index < length[:, None])
        if count is not None:
            valid = valid & (torch.arange(t, device=x.device) < count[:, None])
    x = x.reshape(b * t, -1)
    if model.head_norm is not None:
        x = model.head_norm.bn(x)
    if model.fc is not None:
        x = torch.clamp(model.fc(x), 0.0, CLIP)
    return model.output(x).view(b, t, -1), index, valid, new_states
