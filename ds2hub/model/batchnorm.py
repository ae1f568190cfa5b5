"""Sequence-wise batch normalisation (Deep Speech 2, section 3.2).

Statistics are taken over every *valid* frame of every utterance in the minibatch. Padded frames
are excluded, so an utterance's output never depends on how much padding its batch needed.
"""

from __future__ import annotations

import torch
from torch import nn


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class SequenceWiseBatchNorm(nn.Module):
    """Batch norm over (batch x time) of a padded sequence. Wraps `nn.BatchNorm1d`, so
    `nn.SyncBatchNorm.convert_sync_batchnorm` turns it into synchronised BN under DDP."""

    def __init__(self, num_features: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, momentum=momentum)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C, *rest); mask: (B, T). Padded positions of the output are zero."""
        if not self.training:
            # Running statistics: per-element affine map, no batch dependence; skip the gather.
            flat = x.reshape(x.size(0) * x.size(1), *x.shape[2:])  # (B*T, C, *rest)
            out = self.bn(flat).view_as(x)
            return out * mask.view(*mask.shape, *([1] * (x.dim() - 2))).to(out.dtype)
        valid = self.bn(x[mask])  # (N_valid, C, *rest)
        out = x.new_zeros(x.shape, dtype=valid.dtype)
        out[mask] = valid
        return out
