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
    out because `nn.RNN` offers tanh and unbounded ReLU only. With `projection_norm`,
    h_t = min(max(B(W x_t) + U h_{t-1} + b, 0), 20): sequence-wise BN on W x (the paper's eq. 5).
    Each direction has its own W and so its own B (ds2hub's choice; the paper writes one W x)."""

    def __init__(
        self, input_size: int, hidden_size: int, bidirectional: bool, projection_norm: bool = False
    ) -> None:
        super().__init__()
        n = 2 if bidirectional else 1
        self.input_proj = nn.ModuleList(
            nn.Linear(input_size, hidden_size, bias=False) for _ in range(n)
        )
        self.recurrent = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(n))
        # The paper's placement of sequence-wise BN: on W x (eq. 5), one per direction's W.
        self.projection_norms = (
            nn.ModuleList(SequenceWiseBatchNorm(hidden_size) for _ in range(n))
            if projection_norm
            else None
        )

    def project(self, x: torch.Tensor, direction: int, mask: torch.Tensor | None) -> torch.Tensor:
        """W x of one direction (B, T, H), batch-normalised when the layer norms its projection.
        A None mask takes every frame as valid (running statistics only: eval mode)."""
        xw = self.input_proj[direction](x)
        if self.projection_norms is None:
            return xw
        norm = self.projection_norms[direction]
        if mask is None:
            if norm.training:
                raise RuntimeError("projection BN needs the frame mask in training")
            return norm.bn(xw.reshape(-1, xw.size(-1))).view_as(xw)
        return norm(xw, mask)

    def _run(self, xw: torch.Tensor, rec: nn.Linear) -> torch.Tensor:
        h = xw.new_zeros(xw.size(0), xw.size(2))
        out = []
        for t in range(xw.size(1)):
            h = torch.clamp(xw[:, t] + rec(h), 0.0, CLIP)
            out.append(h)
        return torch.stack(out, dim=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, H), directions summed; mask: (B, T) valid frames."""
        out = self._run(self.project(x, 0, mask), self.recurrent[0])
        if len(self.input_proj) == 2:
            # The mask reversed within each length is the mask itself.
            backward_in = self.project(reverse_padded(x, lengths), 1, mask)
            out = out + reverse_padded(self._run(backward_in, self.recurrent[1]), lengths)
        return out


class RecurrentLayer(nn.Module):
    """Sequence-wise BN on the input (or, `placement="projection"`, on the clipped-ReLU RNN's W x),
    then a (bi)directional recurrence; directions are summed."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        rnn_type: str,
        bidirectional: bool,
        batch_norm: bool,
        placement: str = "input",
    ) -> None:
        super().__init__()
        on_input = batch_norm and placement == "input"
        self.norm = SequenceWiseBatchNorm(input_size) if on_input else None
        self.bidirectional = bidirectional
        self.hidden_size = hidden_size
        if rnn_type == "rnn":
            self.rnn: nn.Module = ClippedReLURNN(
                input_size, hidden_size, bidirectional, projection_norm=batch_norm and not on_input
            )
        else:
            cls = nn.GRU if rnn_type == "gru" else nn.LSTM
            self.rnn = cls(input_size, hidden_size, batch_first=True, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C), zero on padding -> (B, T, H), zero on padding."""
        if self.norm is not None:
            x = self.norm(x, mask)
        if isinstance(self.rnn, ClippedReLURNN):
            out = self.rnn(x, lengths, mask)
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
            config.batch_norm_placement,
        )
        for i in range(config.rnn_layers)
    )
