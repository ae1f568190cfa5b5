"""A torch Dataset over a Hugging Face `datasets` split: audio -> features, text -> token ids."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset

from ds2hub.audio import AudioDecodeError, load_audio
from ds2hub.data.augment import Augmenter
from ds2hub.features import LogSpectrogram
from ds2hub.tokenizers import Tokenizer

log = logging.getLogger(__name__)


def audio_source(value: Any) -> Any:
    """The decodable part of an `Audio(decode=False)` cell (bytes if present, else the path), or of
    a plain path column."""
    if isinstance(value, dict):
        return value.get("bytes") or value.get("path")
    return value


class SpeechDataset(Dataset):
    """Utterances of one split, ready for the model.

    Items are dicts with `features` (F, T), `tokens` (S,), `text` and `duration`; an utterance
    whose audio fails to decode yields None (counted and dropped by `collate`).
    """

    def __init__(
        self,
        hf_dataset,
        tokenizer: Tokenizer,
        frontend: LogSpectrogram,
        audio_column: str,
        text_column: str,
        durations: list[float],
        augmenter: Augmenter | None = None,
    ) -> None:
        self.data = hf_dataset
        self.augmenter = augmenter
        self.tokenizer = tokenizer
        self.frontend = frontend
        self.audio_column = audio_column
        self.text_column = text_column
        self.durations = durations

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        row = self.data[int(index)]
        return make_item(row, int(index), self)


def duration_problem(seconds: float, min_duration: float, max_duration: float) -> str | None:
    """Why an utterance of this length cannot be used, or None (reasons as counted in logs)."""
    if seconds <= 0:
        return "zero-length audio"
    if seconds < min_duration:
        return "shorter than min_duration"
    if seconds > max_duration:
        return "longer than max_duration"
    return None


def make_item(row: dict[str, Any], index: int, source: Any) -> dict[str, Any] | None:
    """Decodes, augments and featurises one row (None, logged, if its audio does not decode)."""
    try:
        waveform = load_audio(audio_source(row[source.audio_column]))
    except AudioDecodeError as error:
        log.warning("skipping utterance %d: %s", index, error)
        return None
    with torch.no_grad():
        if source.augmenter is not None:
            waveform = source.augmenter.waveform(waveform)
        features = source.frontend(waveform)  # (F, T)
        if source.augmenter is not None:
            features = source.augmenter.spectrogram(features)
    text = row[source.text_column]
    return {
        "features": features,
        "tokens": torch.tensor(source.tokenizer.encode(text), dtype=torch.long),
        "text": text,
        "duration": waveform.numel() / source.frontend.config.sample_rate,
        "index": index,
    }


class StreamingSpeechDataset(IterableDataset):
    """A streamed split (`datasets.IterableDataset`) as an iterable of ready batches.

    Durations are unknown ahead of a stream, so utterances are filtered as they arrive (counted
    by reason in `dropped`) and batched `batch_size` at a time. Under DDP the stream is split
    across ranks before it reaches here (`datasets.distributed.split_dataset_by_node`).
    """

    def __init__(
        self,
        stream,
        tokenizer: Tokenizer,
        frontend: LogSpectrogram,
        audio_column: str,
        text_column: str,
        batch_size: int,
        min_duration: float,
        max_duration: float,
        augmenter: Augmenter | None,
        problem: Callable[[str | None], str | None],
    ) -> None:
        self.data, self.tokenizer, self.frontend = stream, tokenizer, frontend
        self.audio_column, self.text_column, self.batch_size = audio_column, text_column, batch_size
        self.min_duration, self.max_duration = min_duration, max_duration
        self.augmenter, self.problem = augmenter, problem
        self.dropped: Counter[str] = Counter()

    def set_epoch(self, epoch: int) -> None:
        """Reshuffles shard order and buffer per epoch where the stream supports it."""
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        for index, row in enumerate(self.data):
            reason = self.problem(row.get(self.text_column))
            item = None if reason else make_item(row, index, self)
            if item is None:
                reason = reason or "undecodable audio"
            else:
                reason = duration_problem(item["duration"], self.min_duration, self.max_duration)
            if reason:
                self.dropped[reason] += 1
                if sum(self.dropped.values()) % 100 == 1:
                    log.warning("stream: dropped so far: %s", dict(self.dropped))
                continue
            batch.append(item)
            if len(batch) == self.batch_size:
                yield collate(batch)
                batch = []
        if batch:
            yield collate(batch)


def is_empty_batch(batch: dict[str, Any]) -> bool:
    """Whether `collate` had nothing to put in this batch (every utterance failed to decode)."""
    return "features" not in batch


def collate_features(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pads (F, T_i) spectrograms into (B, F, T_max) and their (B,) lengths."""
    lengths = torch.tensor([f.size(1) for f in features])
    batch = torch.zeros(len(features), features[0].size(0), int(lengths.max()))  # (B, F, T)
    for i, f in enumerate(features):
        batch[i, :, : f.size(1)] = f
    return batch, lengths


def collate(items: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Pads a list of items into a batch (features zero-padded, so padding never leaks).

    Items that failed to decode (None) are dropped and counted in `skipped_undecodable`; if none
    is left the batch holds only that count (see `is_empty_batch`).
    """
    skipped = sum(it is None for it in items)  # headers read fine, bodies did not decode
    items = [it for it in items if it is not None]
    if not items:  # nothing decoded: an empty batch that steps skip, so the run goes on
        log.warning("skipping a batch: none of its %d utterance(s) decoded", skipped)
        return {"skipped_undecodable": skipped}
    features, lengths = collate_features([it["features"] for it in items])
    target_lengths = torch.tensor([it["tokens"].numel() for it in items])
    targets = torch.zeros(len(items), max(int(target_lengths.max()), 1), dtype=torch.long)  # (B, S)
    for i, it in enumerate(items):
        targets[i, : target_lengths[i]] = it["tokens"]
    return {
        "features": features,
        "feature_lengths": lengths,
        "targets": targets,
        "target_lengths": target_lengths,
        "texts": [it["text"] for it in items],
        "durations": torch.tensor([it["duration"] for it in items]),
        "indices": [it["index"] for it in items],
        "skipped_undecodable": skipped,
    }
