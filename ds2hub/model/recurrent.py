"""Recurrent layers with sequence-wise batch norm: GRU, LSTM, or the paper's clipped-ReLU RNN."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ds2hub.model.batchnorm import SequenceWiseBatchNorm
from ds2hub.model.conv import CLIP


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverses each sequence of (B, T, C) within its own length; padding stays in place."""
    t = torch.arange(x.size(1), device=x.device)[None, :]  # (1, T)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    return x.gather(1, idx[:, :, None].expand_as(x))


class ClippedReLURNN(nn.Module):
    """The paper's simple recurrent layer: h_t = min(max(W x_t + U h_{t-1} + b, 0), 20), written
    out because `nn.RNN` offers tanh and unbounded ReLU only."""

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool) -> None:
        super().__init__()
        n = 2 if bidirectional else 1
        self.input_proj = nn.ModuleList(
            nn.Linear(input_size, hidden_size, bias=False) for _ in range(n)
        )
        self.recurrent = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(n))

    def _run(self, x: torch.Tensor, proj: nn.Linear, rec: nn.Linear) -> torch.Tensor:
        xw = proj(x)  # (B, T, H)
        h = xw.new_zeros(xw.size(0), xw.size(2))
        out = []
        for t in range(xw.size(1)):
            h = torch.clamp(xw[:, t] + rec(h), 0.0, CLIP)
            out.append(h)
        return torch.stack(out, dim=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, H), directions summed."""
        out = self._run(x, self.input_proj[0], self.recurrent[0])
        if len(self.input_proj) == 2:
            backward = self._run(reverse_padded(x, lengths), self.input_proj[1], self.recurrent[1])
            out = out + reverse_padded(backward, lengths)
        return out


class RecurrentLayer(nn.Module):
    """Sequence-wise BN on the input, then a (bi)directional recurrence; directions are summed."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        rnn_type: str,
        bidirectional: bool,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        self.norm = SequenceWiseBatchNorm(input_size) if batch_norm else None
        self.bidirectional = bidirectional
        self.hidden_size = hidden_size
        if rnn_type == "rnn":
            self.rnn: nn.Module = ClippedReLURNN(input_size, hidden_size, bidirectional)
        else:
            cls = nn.GRU if rnn_type == "gru" else nn.LSTM
            self.rnn = cls(input_size, hidden_size, batch_first=True, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C), zero on padding -> (B, T, H), zero on padding."""
        if self.norm is not None:
            x = self.norm(x, mask)
        if isinstance(self.rnn, ClippedReLURNN):
            out = self.rnn(x, lengths)
        else:
            # Packing keeps padded frames out of the backward direction's state.
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
            if self.bidirectional:  # (B, T, 2, H) -> (B, T, H)
                out = out.view(out.size(0), out.size(1), 2, self.hidden_size).sum(dim=2)
        return out * mask[..., None].to(out.dtype)


def recurrent_stack(input_size: int, config) -> nn.ModuleList:
    """The `rnn_layers` recurrent layers of a `DeepSpeech2Config` (the paper found BN on the first
    recurrent layer's input helps as on the others)."""
    return nn.ModuleList(
        RecurrentLayer(
            input_size if i == 0 else config.rnn_hidden,
            config.rnn_hidden,
            config.rnn_type,
            config.bidirectional,
            config.batch_norm,
        )
        for i in range(config.rnn_layers)
    )
