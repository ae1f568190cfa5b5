"""Scoring transcripts: the one set of rules behind the error rates `validate`, `test`, `push` and
`lm tune` report: the word-level rate a language gets (`word_metric`), the normalisation
(`reference_normalizer`), the counting (`edit_counts`), and the scoring of a batch of logits
(`ErrorRates.score_batch`), which the Lightning steps call and `error_rates` sums.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ds2hub.tokenizers import Tokenizer

if TYPE_CHECKING:
    from ds2hub.decoding import Decoding, TextDecoder
    from ds2hub.inference.recognizer import SpeechRecognizer

Counts = tuple[int, int]  # (edits, reference length)
Batch = tuple[torch.Tensor, torch.Tensor, Sequence[str]]  # (B, T, V) logits, (B,) lengths, refs


def word_metric(tokenizer: Tokenizer) -> str:
    """`wer`, or `ser` (sentence error rate) for text without spaces between words: a "word" error
    rate over an unsegmented Chinese transcript counts wrong sentences."""
    return "wer" if tokenizer.word_delimited else "ser"


def reference_normalizer(tokenizer: Tokenizer) -> tuple[Callable[[str], str], str]:
    """How transcripts (references and hypotheses alike) are normalised for scoring
    (`Tokenizer.reference`), and a description of it for the model card."""
    return tokenizer.reference, (
        "case, width and punctuation folded in references and hypotheses alike; every letter, "
        "accent and digit kept, so words the model cannot write count as errors"
    )


def edit_distance(hyp: Sequence[str], ref: Sequence[str]) -> int:
    """Levenshtein distance (substitutions, insertions and deletions all cost 1). Written here:
    inference does not load torchmetrics (the layer contract), the library training uses."""
    row = list(range(len(ref) + 1))
    for i, h in enumerate(hyp, 1):
        diagonal, row[0] = row[0], i
        for j, r in enumerate(ref, 1):
            diagonal, row[j] = row[j], diagonal if h == r else 1 + min(row[j], row[j - 1], diagonal)
    return row[-1]


def edit_counts(hyps: Sequence[str], refs: Sequence[str], metric: str) -> Counts:
    """(edits, reference length) summed over normalised transcripts, as torchmetrics'
    `WordErrorRate` and `CharErrorRate` count them: over whitespace-separated words for `wer` and
    `ser` (whose normalised text is one "word" a sentence), over characters, spaces included, for
    `cer`."""
    units = list if metric == "cer" else str.split
    pairs = [(units(hyp), units(ref)) for hyp, ref in zip(hyps, refs)]
    return sum(edit_distance(h, r) for h, r in pairs), sum(len(r) for _, r in pairs)


def rate(counts: Counts) -> float:
    """An error rate from its counts, in float32 as torchmetrics divides them (nan or inf for an
    empty reference set)."""
    edits, total = torch.tensor(counts, dtype=torch.float32)
    return float(edits / total)


class ErrorRates:
    """How one tokenizer's transcripts are scored: its `metric` (`word_metric`), the `metrics`
    counted (default: `metric` and `cer`) and its `normalize`r (`reference_normalizer`)."""

    def __init__(self, tokenizer: Tokenizer, metrics: Sequence[str] = ()) -> None:
        self.metric = word_metric(tokenizer)
        self.metrics = tuple(metrics) or (self.metric, "cer")
        self.normalize, _ = reference_normalizer(tokenizer)

    def score(
        self, hyps: Sequence[str], refs: Sequence[str]
    ) -> tuple[list[str], list[str], dict[str, Counts]]:
        """Normalised hypotheses and references of one batch, and their counts per metric."""
        hyps = [self.normalize(h) for h in hyps]
        refs = [self.normalize(r) for r in refs]
        return hyps, refs, {name: edit_counts(hyps, refs, name) for name in self.metrics}

    def score_batch(
        self, decode: TextDecoder, logits: torch.Tensor, lengths: torch.Tensor, refs: Sequence[str]
    ) -> tuple[list[str], list[str], dict[str, Counts]]:
        """`score` of `decode`'s transcripts of (B, T, V) logits with (B,) lengths."""
        return self.score(decode(logits, lengths), refs)


def error_rates(
    decode: TextDecoder, batches: Iterable[Batch], scoring: ErrorRates
) -> dict[str, Any]:
    """Corpus error rates (`edit_counts` summed over all batches) of `decode` over batches of
    (logits, lengths, raw references).

    Returns:
        `{metric: rate for each of scoring.metrics, "utterances": n}`.
    """
    counts = {name: (0, 0) for name in scoring.metrics}
    utterances = 0
    for logits, lengths, refs in batches:
        for name, (edits, total) in scoring.score_batch(decode, logits, lengths, refs)[2].items():
            counts[name] = (counts[name][0] + edits, counts[name][1] + total)
        utterances += len(refs)
    return {**{name: rate(c) for name, c in counts.items()}, "utterances": utterances}


def model_outputs(
    recognizer: SpeechRecognizer,
    batches: Iterable[dict[str, Any]],
    max_utterances: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
    """(B, T', V) logits, (B,) output lengths and the batch, for batches as ds2hub's data loaders
    collate them (`features` (B, F, T), `feature_lengths` (B,), `texts`); a batch without
    `features` (none of its audio decoded) is skipped. Stops after the batch that reaches
    `max_utterances`."""
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
) -> dict[str, Any]:
    """Error rates (`error_rates`) of `recognizer` over batches of audio and references (as
    `model_outputs` reads them), decoded with `decoding` (`SpeechRecognizer.text_decoder`; None:
    the model's default).

    Returns:
        `{"wer" or "ser": ..., "cer": ..., "utterances": n}`.
    """
    outputs = model_outputs(recognizer, batches)
    return error_rates(
        recognizer.text_decoder(decoding),
        ((logits, lengths, batch["texts"]) for logits, lengths, batch in outputs),
        ErrorRates(recognizer.tokenizer),
    )


__all__ = [
    "ErrorRates",
    "edit_counts",
    "error_rates",
    "evaluate",
    "model_outputs",
    "rate",
    "reference_normalizer",
    "word_metric",
]
