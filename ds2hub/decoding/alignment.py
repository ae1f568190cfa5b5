"""Word timestamps from the CTC alignment of a transcript to its logits: the best path for greedy
transcripts, else torchaudio's `forced_align` (Viterbi over the CTC topology)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torchaudio.functional as AF

from ds2hub.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)

# forced_align keeps a (frames x (2 * tokens + 1)) table of back-pointers: cap its size.
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
    """(token, first frame, end frame) of each token of a frame-level CTC path (T,)."""
    return [
        (span.token, span.start, span.end)
        for span in AF.merge_tokens(path, torch.zeros(path.shape, dtype=torch.float32), blank)
    ]


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
            path, _ = AF.forced_align(
                logits.log_softmax(-1)[None],
                torch.tensor([targets], dtype=torch.int32),
                blank=blank,
            )
        except RuntimeError as error:  # e.g. more tokens than frames
            logger.warning("no word timestamps: %s", error)
            return None
        spans = _spans(path[0], blank)
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
