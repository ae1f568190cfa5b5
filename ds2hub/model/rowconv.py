"""Row convolution (Deep Speech 2, section 3.5): a forward-only model's bounded look at the future.

r_t[i] = sum_{j=0..tau} W[i, j] * h_{t+j}[i]: a depthwise convolution over time reading `tau`
frames ahead and none behind, above the last recurrent layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RowConvolution(nn.Module):
    """Depthwise future-context convolution over (B, T, C) sequences."""

    def __init__(self, channels: int, lookahead: int) -> None:
        super().__init__()
        self.lookahead = lookahead
        self.weight = nn.Parameter(torch.empty(channels, 1, lookahead + 1))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C), zero on padding (so the look-ahead past an utterance's end reads zeros)."""
        h = F.pad(x.transpose(1, 2), (0, self.lookahead))  # (B, C, T + tau)
        out = F.conv1d(h, self.weight, groups=h.size(1)).transpose(1, 2)  # (B, T, C)
        return out * mask[..., None].to(out.dtype)
