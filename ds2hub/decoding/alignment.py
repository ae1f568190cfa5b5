"""Word timestamps from the CTC alignment of a transcript to its logits: the best path for greedy
transcripts, else a forced alignment (`forced_align`: Viterbi over the CTC topology)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ds2hub.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)

# forced_align keeps a (frames x (2 * tokens + 1)) table of one-byte back-pointers: cap its size.
MAX_ALIGNMENT_CELLS = 50_000_000


@dataclass(frozen=True)
class WordTiming:
    """A word and where it was spoken, in seconds from the start of the audio."""

    word: str
    start: float
    end: float

    def to_dict(self) -> dict:
        return asdict(self)


def _spans(path: torch.Tensor, blank: int) -> list[tuple[int, int, int]]:
    """(token, first frame, end frame) of each token of a frame-level CTC path (T,): runs of one
    label, blanks left out; a repeated label needs a blank between its runs to count twice."""
    labels = path.tolist()
    spans, start = [], 0
    for t in range(1, len(labels) + 1):
        if t == len(labels) or labels[t] != labels[start]:
            if labels[start] != blank:
                spans.append((labels[start], start, t))
            start = t
    return spans


def forced_align(log_probs: torch.Tensor, targets: list[int], blank: int) -> torch.Tensor:
    """The likeliest CTC path of `targets` through `log_probs`: (T, V) -> (T,) frame labels.

    Viterbi over the CTC topology (blanks between and around the labels, a label repeated twice
    in a row needs a blank between). Written here because torch has no forced alignment; the
    paths, ties broken as there, are those of torchaudio's `forced_align`, which ds2hub used
    before (tests/test_decoding.py). The frame loop is numpy over the 2L + 1 states.

    Raises:
        ValueError: no path exists (fewer frames than the labels and their needed blanks).
    """
    scores = log_probs.detach().double().cpu().numpy()
    frames = scores.shape[0]
    if not frames or not targets:
        raise ValueError(f"cannot align {len(targets)} labels to {frames} frames")
    ext = np.full(2 * len(targets) + 1, blank, dtype=np.int64)
    ext[1::2] = targets
    n = ext.size
    # A label state may also come from two states back (skipping the blank between two labels)
    # unless it repeats the label there.
    skip = np.zeros(n, dtype=bool)
    skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    alpha = np.full(n, -np.inf)
    alpha[:2] = scores[0, ext[:2]]
    back = np.zeros((frames, n), dtype=np.int8)  # 0 stay, 1 from s - 1, 2 from s - 2
    for t in range(1, frames):
        one = np.concatenate(([-np.inf], alpha[:-1]))
        two = np.where(skip, np.concatenate(([-np.inf, -np.inf], alpha[:-2])), -np.inf)
        choices = np.stack([alpha, one, two])
        back[t] = choices.argmax(axis=0)
        alpha = choices.max(axis=0) + scores[t, ext]
    # Ties go to ending on the last label, and (argmax: the first) to staying in a state.
    last = n - 1 if n == 1 or alpha[n - 1] > alpha[n - 2] else n - 2
    if not np.isfinite(alpha[last]):
        raise ValueError(f"{len(targets)} labels do not fit in {frames} frames")
    path = np.empty(frames, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = ext[last]
        last -= back[t, last]
    return torch.from_numpy(path)


def word_timestamps(
    logits: torch.Tensor, text: str, tokenizer: Tokenizer, frame_seconds: float
) -> list[WordTiming] | None:
    """Times of each word of `text`, decoded from `logits`.

    Args:
        logits: (T, V) scores of one utterance (valid frames only).
        text: its transcript (from any decoder).
        tokenizer: the model's vocabulary.
        frame_seconds: seconds per logit frame (feature hop times the model's time stride).
    Returns:
        one `WordTiming` per word (per character without word delimiters), or None when the
        transcript cannot be aligned to these logits (then a warning is logged).
    """
    # Without spaces between words (Chinese), each character is a unit of timing.
    words = text.split() if tokenizer.word_delimited else [c for c in text if not c.isspace()]
    if not words:
        return []
    try:
        spelled = [tokenizer.encode(w) for w in words]
    except ValueError as error:  # a word outside the vocabulary cannot be aligned
        logger.warning("no word timestamps: %s", error)
        return None
    targets = [i for ids in spelled for i in ids]
    blank = tokenizer.blank_id
    logits = logits.detach().float().cpu()
    # Greedy transcripts: the best path is the alignment (tokens between words, such as the
    # space of character vocabularies, are dropped as the words' own spellings leave them out).
    spans = _spans(logits.argmax(dim=-1), blank)
    wanted = set(targets)
    spans = [s for s in spans if s[0] in wanted or tokenizer.vocab[s[0]].strip()]
    if [s[0] for s in spans] != targets:
        frames = logits.size(0)
        if not targets or frames * (2 * len(targets) + 1) > MAX_ALIGNMENT_CELLS:
            logger.warning("no word timestamps: %d frames x %d tokens", frames, len(targets))
            return None
        try:
            path = forced_align(logits.log_softmax(-1), targets, blank)
        except ValueError as error:  # more tokens than frames
            logger.warning("no word timestamps: %s", error)
            return None
        spans = _spans(path, blank)
    timings, k = [], 0
    for word, ids in zip(words, spelled):
        if not ids:  # nothing of it is in the vocabulary: it was not aligned
            continue
        first, last = spans[k], spans[k + len(ids) - 1]
        k += len(ids)
        timings.append(
            WordTiming(word, round(first[1] * frame_seconds, 3), round(last[2] * frame_seconds, 3))
        )
    return timings
