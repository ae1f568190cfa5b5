"""Streaming a forward-only Deep Speech 2 network: feature frames in, logits out, chunk by chunk.

A forward-only model with a row convolution looks a bounded number of frames ahead (Deep Speech 2,
section 7), so it can run while audio arrives. `stream_step` carries what crosses a chunk boundary
in a `NetworkState` per stream, and emits each output frame as soon as everything it depends on has
arrived; the logits of a stream equal those of the whole-utterance forward pass (eval mode):

- convolutions: every layer keeps the input frames its next output still needs, starting with the
  left zero padding, and emits an output once its whole receptive field (kernel and stride) is in;
  frames before the start and past the end of the utterance read as zeros, exactly as the
  whole-utterance pass pads them;
- recurrent layers: the hidden state;
- the row convolution: its last `lookahead` inputs, so output t waits for frame t + lookahead;
- batch norm in eval mode uses running statistics, a per-frame affine map.

The last step of a stream (`final`) flushes: it pads the right end as the whole pass does.

Several streams advance in one batched pass (chunks of different lengths are padded, and each
stream keeps only its own valid outputs): what a Batch Dispatch server needs. Written here
because no library streams CTC models built from torch's layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ds2hub.model.batchnorm import lengths_to_mask
from ds2hub.model.conv import CLIP, conv_output_length
from ds2hub.model.deepspeech2 import DeepSpeech2
from ds2hub.model.recurrent import ClippedReLURNN

_UNKNOWN = 1 << 62  # length of a layer's output while the utterance has not ended


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
    """Per conv layer: (kernel, stride, initial buffer width, index of its first output).

    A layer's buffer starts `width` frames before its first input and holds zeros there, so its
    first window is aligned to an output index (negative indices are the left padding: they are
    computed and then zeroed, as the next layer reads zeros there in the whole-utterance pass).
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


@dataclass
class NetworkState:
    """What one stream carries from one step to the next.

    Attributes:
        conv: per conv layer, the pending input frames (C, F, W) its next outputs need.
        conv_next: per conv layer, the index of its next output (negative: left padding).
        hidden: per recurrent layer, the hidden state ((1, H) GRU / clipped RNN; (h, c) LSTM).
        rowconv: the last `lookahead` recurrent outputs (lookahead, H), zeros at the start.
        rnn_frames: recurrent frames computed so far.
        input_frames: feature frames received so far.
        emitted: output frames (logits) emitted so far.
        done: whether the final step ran.
    """

    conv: list[torch.Tensor]
    conv_next: list[int]
    hidden: list[torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None]
    rowconv: torch.Tensor | None
    rnn_frames: int = 0
    input_frames: int = 0
    emitted: int = 0
    done: bool = False
    lengths: list[int] = field(default_factory=list)  # per conv layer, set by the final step

    def snapshot(self) -> NetworkState:
        """A copy that later steps of this state do not reach: `stream_step` rebinds tensors
        and list slots but never writes into a tensor, so copying the lists is enough (the
        tensors, often views of a whole batch's buffer, are shared, not copied)."""
        return replace(
            self,
            conv=list(self.conv),
            conv_next=list(self.conv_next),
            hidden=list(self.hidden),
            lengths=list(self.lengths),
        )


def initial_state(model: DeepSpeech2) -> NetworkState:
    """A fresh stream's state: zero left padding, zero hidden state, nothing emitted."""
    check_streamable(model)
    param = next(model.parameters())
    conv, nexts = [], []
    channels, freq = 1, model.config.n_features
    for (_, _, width, first), layer in zip(conv_layout(model), model.conv.convs):
        conv.append(param.new_zeros(channels, freq, width))
        nexts.append(first)
        channels = layer.out_channels
        freq = conv_output_length(freq, layer.kernel_size[0], layer.stride[0])
    rowconv = None
    if model.rowconv is not None:
        rowconv = param.new_zeros(model.rowconv.lookahead, model.config.rnn_hidden)
    return NetworkState(conv, nexts, [None] * len(model.rnns), rowconv)


def right_context(model: DeepSpeech2) -> int:
    """Input frames past the end that the final step feeds as zeros: enough for every conv
    layer to emit its last output (its right padding), plus one total stride."""
    frames, scale = 0, 1
    for kt, st in zip(model.config.conv_kernel_time, model.config.conv_stride_time):
        frames += (kt // 2) * scale
        scale *= st
    return frames + 2 * scale


def _pad_time(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stacks (..., T_b) tensors, zero-padded on the right to the longest: (B, ..., T)."""
    longest = max(t.size(-1) for t in tensors)
    return torch.stack([F.pad(t, (0, longest - t.size(-1))) for t in tensors])


def _conv_step(
    model: DeepSpeech2, states: list[NetworkState], chunks: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Runs the conv stack on each stream's new frames; returns each stream's new top-layer
    outputs (n_b, C*F') with indices `conv_next[-1]` (before the call) onwards."""
    x_list = [c.unsqueeze(0) for c in chunks]  # (1, F, k_b)
    for i, (conv, norm) in enumerate(zip(model.conv.convs, model.conv.norms)):
        kt, st = conv.kernel_size[1], conv.stride[1]
        buffers = [torch.cat([s.conv[i], x], dim=-1) for s, x in zip(states, x_list)]
        counts = [max(0, (b.size(-1) - kt) // st + 1) for b in buffers]
        if max(counts) == 0:
            freq = conv_output_length(buffers[0].size(1), conv.kernel_size[0], conv.stride[0])
            outs = [b.new_zeros(conv.out_channels, freq, 0) for b in buffers]
        else:
            batch = _pad_time(buffers)  # (B, C, F, L)
            if batch.size(-1) < kt:
                batch = F.pad(batch, (0, kt - batch.size(-1)))
            # Time padding is the buffers' own (left zeros, carried context); frequency as usual.
            y = F.conv2d(batch, conv.weight, conv.bias, (conv.stride[0], st), (conv.padding[0], 0))
            if not isinstance(norm, torch.nn.Identity):
                b, c, f, t = y.shape
                flat = y.permute(0, 3, 1, 2).reshape(b * t, c, f)  # (B*T, C, F)
                y = norm.bn(flat).view(b, t, c, f).permute(0, 2, 3, 1)
            y = torch.clamp(y, 0.0, CLIP)
            outs = []
            for b, (s, n) in enumerate(zip(states, counts)):
                out = y[b, :, :, :n]
                idx = torch.arange(s.conv_next[i], s.conv_next[i] + n, device=y.device)
                limit = s.lengths[i] if s.lengths else _UNKNOWN
                valid = (idx >= 0) & (idx < limit)  # zeros where the whole pass pads
                outs.append(out * valid.to(out.dtype))
        for s, buf, n in zip(states, buffers, counts):
            s.conv[i] = buf[..., n * st :]
            s.conv_next[i] += n
        x_list = outs
    result = []
    for x in x_list:
        c, f, t = x.shape
        result.append(x.permute(2, 0, 1).reshape(t, c * f))  # (n_b, C*F')
    return result


def _rnn_step(
    model: DeepSpeech2, states: list[NetworkState], seqs: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Runs the recurrent layers over each stream's new frames (n_b, D) -> (n_b, H)."""
    active = [b for b, x in enumerate(seqs) if x.size(0) > 0]
    if not active:
        return [x.new_zeros(0, model.config.rnn_hidden) for x in seqs]
    lengths = torch.tensor([seqs[b].size(0) for b in active])
    x = torch.nn.utils.rnn.pad_sequence([seqs[b] for b in active], batch_first=True)  # (B, T, D)
    mask = lengths_to_mask(lengths.to(x.device), x.size(1))
    for i, layer in enumerate(model.rnns):
        if layer.norm is not None:
            x = layer.norm(x, mask)
        hidden = [states[b].hidden[i] for b in active]
        zeros = x.new_zeros(1, layer.hidden_size)
        if isinstance(layer.rnn, ClippedReLURNN):
            h = torch.cat([zeros if v is None else v for v in hidden])  # (B, H)
            xw = layer.rnn.input_proj[0](x)  # (B, T, H)
            out = []
            for t in range(x.size(1)):
                new = torch.clamp(xw[:, t] + layer.rnn.recurrent[0](h), 0.0, CLIP)
                h = torch.where(mask[:, t, None], new, h)  # frozen after a stream's last frame
                out.append(h)
            y = torch.stack(out, dim=1)  # (B, T, H)
            new_hidden = [h[k : k + 1] for k in range(len(active))]
        else:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            if isinstance(layer.rnn, torch.nn.LSTM):
                h0 = torch.cat([zeros if v is None else v[0] for v in hidden])[None]  # (1, B, H)
                c0 = torch.cat([zeros if v is None else v[1] for v in hidden])[None]
                y, (hn, cn) = layer.rnn(packed, (h0, c0))
                new_hidden = [(hn[:, k], cn[:, k]) for k in range(len(active))]
            else:
                h0 = torch.cat([zeros if v is None else v for v in hidden])[None]  # (1, B, H)
                y, hn = layer.rnn(packed, h0)
                new_hidden = [hn[:, k] for k in range(len(active))]
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.size(1))
        for k, b in enumerate(active):
            states[b].hidden[i] = new_hidden[k]
        x = y * mask[..., None].to(y.dtype)
    out = [x.new_zeros(0, model.config.rnn_hidden) for _ in seqs]
    for k, b in enumerate(active):
        out[b] = x[k, : int(lengths[k])]
    return out


def _rowconv_step(
    model: DeepSpeech2, states: list[NetworkState], seqs: list[torch.Tensor]
) -> list[torch.Tensor]:
    """The row convolution over each stream's new recurrent frames; an output leaves once its
    `lookahead` future frames are in (those before the utterance's start are dropped)."""
    if model.rowconv is None:
        return seqs
    tau = model.rowconv.lookahead
    counts = [x.size(0) for x in seqs]
    if max(counts) == 0:
        return seqs
    buffers = [torch.cat([s.rowconv, x]) for s, x in zip(states, seqs)]  # (tau + n_b, H)
    batch = _pad_time([b.T for b in buffers]).transpose(1, 2)  # (B, L, H)
    # r_t = sum_j W[:, j] * h_{t+j}: windows of tau + 1 frames (cheaper than a grouped conv1d
    # on the few frames of a chunk).
    windows = batch.unfold(1, tau + 1, 1)  # (B, L - tau, H, tau + 1)
    y = (windows * model.rowconv.weight[:, 0]).sum(dim=-1)  # (B, L - tau, H)
    outs = []
    for b, (s, n) in enumerate(zip(states, counts)):
        first = s.rnn_frames - tau  # index of this step's first output
        keep = max(0, -first)  # outputs before the utterance's start
        outs.append(y[b, keep:n])
        s.rowconv = buffers[b][-tau:] if tau else buffers[b][:0]
        s.rnn_frames += n
    return outs


def _head(model: DeepSpeech2, x: torch.Tensor) -> torch.Tensor:
    """Per-frame layers above the recurrence: (N, H) -> (N, V) logits."""
    if model.head_norm is not None:
        x = model.head_norm.bn(x)
    if model.fc is not None:
        x = torch.clamp(model.fc(x), 0.0, CLIP)
    return model.output(x)


@torch.no_grad()
def stream_step(
    model: DeepSpeech2,
    states: list[NetworkState],
    chunks: list[torch.Tensor],
    final: list[bool] | None = None,
) -> list[torch.Tensor]:
    """Advances several streams by one chunk of feature frames each, in one batched pass.

    Args:
        model: a forward-only `DeepSpeech2` in eval mode.
        states: one `NetworkState` per stream (from `initial_state`), updated in place.
        chunks: (F, k_b) new feature frames per stream; k_b may be 0.
        final: per stream, whether this is its last chunk (then the remaining outputs are
            flushed with the whole-utterance pass's right padding and the stream is closed).
    Returns:
        per stream, the (n_b, V) logits of the output frames that became final in this step.
    """
    check_streamable(model)
    final = final or [False] * len(states)
    tau = model.rowconv.lookahead if model.rowconv is not None else 0
    chunks = list(chunks)
    for b, (s, last) in enumerate(zip(states, final)):
        if s.done:
            raise StreamingError("this stream has finished; start a new one")
        s.input_frames += chunks[b].size(-1)
        if last:
            total = torch.tensor(s.input_frames)
            s.lengths = []
            for kt, st in zip(model.config.conv_kernel_time, model.config.conv_stride_time):
                total = conv_output_length(total, kt, st)
                s.lengths.append(int(total))
            zeros = chunks[b].new_zeros(chunks[b].size(0), right_context(model))
            chunks[b] = torch.cat([chunks[b], zeros], dim=-1)
    top = _conv_step(model, states, chunks)
    seqs = []
    for s, x in zip(states, top):
        first = s.conv_next[-1] - x.size(0)  # index of this step's first top-layer output
        lo = max(0, -first)
        limit = s.lengths[-1] if s.lengths else _UNKNOWN
        hi = max(lo, min(x.size(0), limit - first))
        seqs.append(x[lo:hi])  # only frames of the utterance enter the recurrence
    seqs = _rnn_step(model, states, seqs)
    for b, last in enumerate(final):
        if last and tau:  # the whole pass reads zeros past the end
            seqs[b] = torch.cat([seqs[b], seqs[b].new_zeros(tau, seqs[b].size(1))])
    seqs = _rowconv_step(model, states, seqs)
    for b, last in enumerate(final):
        if last and tau:
            states[b].rnn_frames -= tau  # the padding is not part of the utterance
    counts = [x.size(0) for x in seqs]
    flat = torch.cat(seqs) if seqs else torch.zeros(0)
    logits = _head(model, flat) if flat.size(0) else flat.new_zeros(0, model.vocab_size)
    out = list(torch.split(logits, counts))
    for s, n, last in zip(states, counts, final):
        s.emitted += n
        s.done = last
    return out


__all__ = [
    "NetworkState",
    "StreamingError",
    "check_streamable",
    "conv_layout",
    "initial_state",
    "right_context",
    "stream_step",
]
