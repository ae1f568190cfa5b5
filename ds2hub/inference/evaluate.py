"""Scoring transcripts: the error rates `validate`, `test`, `push` and `lm tune` report.

One rule each, used by all of them:

- which word-level rate a language gets (`word_metric`): the word error rate, or for text written
  without spaces between words the sentence error rate (a "word" error rate over an unsegmented
  Chinese transcript counts wrong sentences);
- how references and hypotheses are normalised before scoring (`reference_normalizer`);
- how a corpus error rate is counted (`edit_counts`): Levenshtein edits summed over the corpus,
  divided by the references' summed length (words, or characters with spaces), as torchmetrics'
  `WordErrorRate` and `CharErrorRate` define it;
- how batches are decoded and scored (`ErrorRates`, `evaluate`; training scores its batches with
  `ErrorRates.score` in its own loop).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ds2hub.tokenizers import Tokenizer

if TYPE_CHECKING:
    from ds2hub.decoding import Decoding
    from ds2hub.inference.recognizer import SpeechRecognizer

Counts = tuple[int, int]  # (edits, reference length)


def word_metric(tokenizer: Tokenizer) -> str:
    """`wer`, or `ser` (sentence error rate) for text without spaces between words."""
    return "wer" if tokenizer.word_delimited else "ser"


def reference_normalizer(tokenizer: Tokenizer) -> tuple[Callable[[str], str], str]:
    """How transcripts (references and hypotheses alike) are normalised for scoring
    (`Tokenizer.reference`), and a description of it for the model card."""
    return tokenizer.reference, (
        "case, width and punctuation folded in references and hypotheses alike; every letter, "
        "accent and digit kept, so words the model cannot write count as errors"
    )


def edit_distance(hyp: Sequence[str], ref: Sequence[str]) -> int:
    """Levenshtein distance (substitutions, insertions and deletions all cost 1)."""
    row = list(range(len(ref) + 1))
    for i, h in enumerate(hyp, 1):
        diagonal, row[0] = row[0], i
        for j, r in enumerate(ref, 1):
            diagonal, row[j] = row[j], diagonal if h == r else 1 + min(row[j], row[j - 1], diagonal)
    return row[-1]


def edit_counts(hyps: Sequence[str], refs: Sequence[str], metric: str) -> Counts:
    """(edits, reference length) summed over normalised transcripts: over whitespace-separated
    words for `wer` and `ser` (whose normalised text is one "word" a sentence), over characters,
    spaces included, for `cer`."""
    units = list if metric == "cer" else str.split
    edits = total = 0
    for hyp, ref in zip(hyps, refs):
        ref_units = units(ref)
        edits += edit_distance(units(hyp), ref_units)
        total += len(ref_units)
    return edits, total


def rate(counts: Counts) -> float:
    """An error rate from its counts, in float32 as torchmetrics divides them (nan or inf for an
    empty reference set)."""
    edits, total = torch.tensor(counts, dtype=torch.float32)
    return float(edits / total)


class ErrorRates:
    """Corpus error rates of one tokenizer's transcripts, accumulated batch by batch.

    Attributes:
        metric: `wer` or `ser` (`word_metric`); `cer` is always reported beside it.
        normalize: the scoring normaliser (`reference_normalizer`).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.metric = word_metric(tokenizer)
        self.normalize, self.normalization = reference_normalizer(tokenizer)
        self.counts: dict[str, Counts] = {self.metric: (0, 0), "cer": (0, 0)}
        self.utterances = 0

    def score(
        self, hyps: Sequence[str], refs: Sequence[str]
    ) -> tuple[list[str], list[str], dict[str, Counts]]:
        """Normalised hypotheses and references of one batch, and their counts per metric
        (nothing is accumulated)."""
        hyps = [self.normalize(h) for h in hyps]
        refs = [self.normalize(r) for r in refs]
        return hyps, refs, {name: edit_counts(hyps, refs, name) for name in self.counts}

    def update(self, hyps: Sequence[str], refs: Sequence[str]) -> None:
        """Adds a batch of raw transcripts."""
        _, _, counts = self.score(hyps, refs)
        for name, (edits, total) in counts.items():
            old_edits, old_total = self.counts[name]
            self.counts[name] = (old_edits + edits, old_total + total)
        self.utterances += len(refs)

    def compute(self) -> dict[str, float]:
        """`{"wer" or "ser": ..., "cer": ...}` over everything added."""
        return {name: rate(counts) for name, counts in self.counts.items()}


def model_outputs(
    recognizer: SpeechRecognizer,
    batches: Iterable[dict[str, Any]],
    max_utterances: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
    """Runs the acoustic model over batches (dicts with `features` (B, F, T), `feature_lengths`
    (B,) and `texts`, as ds2hub's data loaders collate them); a batch without `features` (none
    of its audio decoded) is skipped. Stops after the batch that reaches `max_utterances`.

    Yields:
        (B, T', V) logits, (B,) output lengths and the batch.
    """
    seen = 0
    for batch in batches:
        if "features" not in batch:
            continue
        logits, lengths = recognizer(batch["features"], batch["feature_lengths"])
        yield logits, lengths, batch
        seen += len(batch["texts"])
        if max_utterances and seen >= max_utterances:
            return


@torch.inference_mode()
def evaluate(
    recognizer: SpeechRecognizer,
    batches: Iterable[dict[str, Any]],
    decoding: Decoding = None,
    max_utterances: int | None = None,
) -> dict[str, Any]:
    """Error rates of `recognizer` over batches of audio and references, decoded with `decoding`
    (see `SpeechRecognizer.text_decoder`; None: the model's default).

    Returns:
        `{"wer" or "ser": ..., "cer": ..., "utterances": n}`.
    """
    rates = ErrorRates(recognizer.tokenizer)
    decode = recognizer.text_decoder(decoding)
    for logits, lengths, batch in model_outputs(recognizer, batches, max_utterances):
        rates.update(decode(logits, lengths), batch["texts"])
    return {**rates.compute(), "utterances": rates.utterances}


def decoded_error_rate(
    decode: Callable[[torch.Tensor, torch.Tensor], list[str]],
    outputs: Iterable[tuple[torch.Tensor, torch.Tensor]],
    references: Sequence[str],
    normalize: Callable[[str], str],
    metric: str,
) -> float:
    """The `metric` error rate of `decode` over model outputs ((B, T, V) log-probs, (B,) lengths)
    against normalised references: how `lm tune` scores each setting on the same outputs."""
    hyps = [normalize(h) for logits, lengths in outputs for h in decode(logits, lengths)]
    hyps = hyps[: len(references)]
    return rate(edit_counts(hyps, references[: len(hyps)], metric))


__all__ = [
    "ErrorRates",
    "decoded_error_rate",
    "edit_counts",
    "edit_distance",
    "evaluate",
    "model_outputs",
    "rate",
    "reference_normalizer",
    "word_metric",
]
