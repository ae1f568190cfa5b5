"""Greedy (best-path) CTC decoding: argmax per frame, merge repeats, drop blanks."""

from __future__ import annotations

import torch


def greedy_decode(
    logits: torch.Tensor, lengths: torch.Tensor, blank_id: int = 0
) -> list[list[int]]:
    """Best-path token ids per utterance.

    Args:
        logits: (B, T, V) scores (logits or log-probabilities).
        lengths: (B,) valid output frames.
        blank_id: the CTC blank.
    Returns:
        B lists of token ids, blanks and repeats collapsed.
    """
    best = logits.argmax(dim=-1).cpu()  # (B, T)
    out = []
    for path, n in zip(best, lengths.cpu().tolist()):
        ids = torch.unique_consecutive(path[:n])
        out.append(ids[ids != blank_id].tolist())
    return out
