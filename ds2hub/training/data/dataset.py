"""A torch Dataset over a Hugging Face `datasets` split: audio -> features, text -> token ids."""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ds2hub.audio import AudioDecodeError, load_audio
from ds2hub.features import LogSpectrogram
from ds2hub.tokenizers import Tokenizer
from ds2hub.training.data.augment import Augmenter
from ds2hub.training.data.sampler import pack_greedy

log = logging.getLogger(__name__)


def audio_source(value: Any) -> Any:
    """The decodable part of an `Audio(decode=False)` cell (bytes if present, else the path), or of
    a plain path column."""
    return (value.get("bytes") or value.get("path")) if isinstance(value, dict) else value


class SpeechDataset(Dataset):
    """Utterances of one split, ready for the model.

    Items are dicts with `features` (F, T), `tokens` (S,), `text` and `duration`; an utterance
    whose audio fails to decode yields None (counted and dropped by `collate`). With
    `frontend_on_device`, `samples` (the padded waveform), `frames` and SpecAugment's `masks`
    replace `features`, which the training step computes on its device.
    """

    frontend_on_device = False

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
        self.data, self.tokenizer, self.frontend = hf_dataset, tokenizer, frontend
        self.audio_column, self.text_column = audio_column, text_column
        self.durations, self.augmenter = durations, augmenter

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        return make_item(self.data[int(index)], int(index), self)


def make_item(row: dict[str, Any], index: int, source: Any) -> dict[str, Any] | None:
    """Decodes, augments and featurises one row into an item of `source`'s dataset (with its
    augmenter, front end and tokenizer); None, logged, if its audio does not decode."""
    try:
        waveform = load_audio(audio_source(row[source.audio_column]))
    except AudioDecodeError as error:
        log.warning("skipping utterance %d: %s", index, error)
        return None
    text = row[source.text_column]
    item: dict[str, Any] = {
        "tokens": torch.tensor(source.tokenizer.encode(text), dtype=torch.long),
        "text": text,
        "index": index,
    }
    with torch.no_grad():
        if source.augmenter is not None:
            waveform = source.augmenter.waveform(waveform)
        item["duration"] = waveform.numel() / source.frontend.config.sample_rate
        if source.frontend_on_device:  # the features are computed from these in the step
            samples = source.frontend.reflect_pad(waveform)
            frames = 1 + (samples.numel() - source.frontend.config.n_fft) // (
                source.frontend.config.hop_length
            )
            masks = source.augmenter.feature_masks(frames) if source.augmenter else []
            return {**item, "samples": samples, "frames": frames, "masks": masks}
        features = source.frontend(waveform)  # (F, T)
        if source.augmenter is not None:
            features = source.augmenter.features(features)
    return {**item, "features": features}


@dataclass(frozen=True)
class StreamOrder:
    """How a stream becomes an epoch of batches: the streaming settings of `SpeechDataModule`
    (`batches_per_epoch` is its `stream_batches_per_epoch`). Batches are packed by `pack_greedy`;
    with `bucketing`, each window of `shuffle_buffer` (at least `batch_size`) arriving utterances
    is sorted by length before packing, and its batches are shuffled."""

    batch_size: int
    max_batch_seconds: float | None = None
    bucketing: bool = False
    shuffle_buffer: int = 1000
    seed: int = 0
    batches_per_epoch: int | None = None


@dataclass(frozen=True)
class Utterance:
    """A usable row of a stream, before decoding: enough to decide its batch."""

    index: int  # position in its pass over this rank's stream
    row: dict[str, Any]
    seconds: float  # from a `duration` column or the audio header


class StreamingSpeechDataset(IterableDataset):
    """A streamed split (under DDP this rank's share, see `rank_share`) as an iterable of ready
    batches: utterances are filtered as they arrive (`check`, each reason counted in `dropped`),
    then batched by `order`.

    The batches are decided before any audio is decoded, from the rank's stream, the seed and the
    epoch alone: `skip_batches` (a mid-epoch resume) skips them undecoded, and every DataLoader
    worker reads the rank's whole stream but decodes only every `num_workers`-th batch, so batches
    do not depend on `num_workers`. `EpochLoader` sets the epoch and resume point before it starts
    its (non-persistent) workers, which is how they reach them.
    """

    def __init__(
        self,
        stream,
        tokenizer: Tokenizer,
        frontend: LogSpectrogram,
        audio_column: str,
        text_column: str,
        order: StreamOrder,
        augmenter: Augmenter | None,
        check: Callable[[dict[str, Any]], tuple[str | None, float]],
    ) -> None:
        self.data, self.tokenizer, self.frontend = stream, tokenizer, frontend
        self.audio_column, self.text_column, self.order = audio_column, text_column, order
        self.augmenter, self.check = augmenter, check
        self.frontend_on_device = False  # (see SpeechDataset)
        self.dropped: Counter[str] = Counter()
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch the next iteration yields (a new shuffle of the stream per epoch);
        forgets any resume point of the previous one."""
        self.epoch = epoch  # reaches `datasets` through `set_epoch` of each pass's shuffle
        self._skip = 0

    def skip_batches(self, count: int) -> None:
        """Makes the next iteration of the current epoch start after its first `count` batches."""
        self._skip = count

    def _pass(self, number: int):
        """Pass `number` of this epoch over the rank's stream: shuffled with the seed and reseeded
        per epoch and per pass (`datasets`' own `shuffle` and `set_epoch`)."""
        if self.order.shuffle_buffer <= 0:
            return self.data
        stream = self.data.shuffle(
            seed=self.order.seed,
            buffer_size=self.order.shuffle_buffer,
            # The buffer is fed from up to 10 shards at once; with one shard (per rank) that
            # feeder is pointless, and for parquet it pauses 5 s at the end of every pass.
            max_buffer_input_shards=max(1, min(10, self.data.num_shards)),
        )
        # A new view per pass: `datasets` keeps a stream's epoch in memory shared with the
        # DataLoader workers, so workers setting their own pass on `self.data` would race.
        stream.set_epoch(self.epoch + (number << 32))  # pass 0 is the epoch itself
        return stream

    def _rows(self, stream) -> Iterator[dict[str, Any]]:
        # `iter()`, not `iter(stream)`: inside a DataLoader worker, `datasets` would hand this
        # worker only some of the shards (and none to workers beyond the shard count); here every
        # worker plans from the rank's whole stream (see the class docstring).
        for chunk in stream.iter(batch_size=64):
            yield from (dict(zip(chunk, values)) for values in zip(*chunk.values()))

    def usable(self, number: int = 0, loud: bool = True) -> Iterator[Utterance]:
        """The usable utterances of pass `number` of the epoch, in stream order (`loud`: log
        what is dropped)."""
        for index, row in enumerate(self._rows(self._pass(number))):
            reason, seconds = self.check(row)
            if reason:
                self.dropped[reason] += 1
                if loud and sum(self.dropped.values()) % 100 == 1:
                    log.warning("stream: dropped so far: %s", dict(self.dropped))
                continue
            yield Utterance(index, row, seconds)

    def plan(self, loud: bool = True) -> Iterator[list[Utterance]]:
        """The epoch's batches, undecoded, in the order they are trained on: one pass over the
        stream, or pass after pass until `order.batches_per_epoch`."""
        order = self.order
        budget = order.max_batch_seconds or math.inf
        rng = random.Random(order.seed * 100_003 + self.epoch)

        def batches(number: int) -> Iterator[list[Utterance]]:
            # Each pass is batched on its own, so no batch (or bucket) holds an utterance twice.
            utterances = self.usable(number, loud)
            if order.bucketing:
                window = max(order.shuffle_buffer, order.batch_size)
                return _bucketed(utterances, window, budget, order.batch_size, rng)
            return pack_greedy(utterances, attrgetter("seconds"), budget, order.batch_size)

        if order.batches_per_epoch is None:
            return batches(0)
        return itertools.islice(self._passes(batches), order.batches_per_epoch)

    def _passes(
        self, batches: Callable[[int], Iterator[list[Utterance]]]
    ) -> Iterator[list[Utterance]]:
        for number in itertools.count():
            empty = True
            for batch in batches(number):
                empty = False
                yield batch
            if empty:  # another pass would find nothing either: fail instead of spinning
                raise ValueError(
                    "this rank's share of the stream has no usable utterance, so it cannot make "
                    f"its {self.order.batches_per_epoch} batches per epoch (dropped: "
                    f"{dict(self.dropped)})"
                )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        skip, self._skip = self._skip, 0
        for number, batch in enumerate(self.plan(loud=worker == 0)):
            # Batch `skip` goes to worker 0: the DataLoader takes one batch from each worker in
            # turn, starting with worker 0, so the batches arrive in plan order.
            if number >= skip and (number - skip) % workers == worker:
                yield collate([make_item(u.row, u.index, self) for u in batch])


def _bucketed(
    utterances: Iterator[Utterance],
    window_size: int,
    max_batch_seconds: float,
    max_batch_size: int,
    rng: random.Random,
) -> Iterator[list[Utterance]]:
    """Length bucketing for a stream: each window of utterances sorted by length and packed, its
    batches shuffled. As in `DurationBatchSampler`, lengths are jittered by +-5 % for the sort, so
    bucket edges (which utterances share a batch) vary from epoch to epoch."""
    while window := list(itertools.islice(utterances, window_size)):
        keys = [u.seconds * (1 + 0.1 * (rng.random() - 0.5)) for u in window]
        ordered = [window[i] for i in sorted(range(len(window)), key=keys.__getitem__)]
        batches = list(
            pack_greedy(ordered, attrgetter("seconds"), max_batch_seconds, max_batch_size)
        )
        rng.shuffle(batches)
        yield from batches


def is_empty_batch(batch: dict[str, Any]) -> bool:
    """Whether `collate` had nothing to put in this batch (every utterance failed to decode)."""
    return "features" not in batch


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
    target_lengths = torch.tensor([it["tokens"].numel() for it in items])
    targets = torch.zeros(len(items), max(int(target_lengths.max()), 1), dtype=torch.long)
    for i, it in enumerate(items):
        targets[i, : target_lengths[i]] = it["tokens"]
    if "samples" in items[0]:  # the front end runs on the device (`LogSpectrogram.batch`)
        sample_lengths = torch.tensor([it["samples"].numel() for it in items])
        inputs = {
            "samples": pad_sequence([it["samples"] for it in items], batch_first=True),
            "sample_lengths": sample_lengths,
            "feature_lengths": torch.tensor([it["frames"] for it in items]),
            "masks": [it["masks"] for it in items],
        }
    else:
        lengths = torch.tensor([it["features"].size(1) for it in items])
        # (B, F, T), zero-padded
        features = torch.zeros(len(items), items[0]["features"].size(0), int(lengths.max()))
        for i, it in enumerate(items):
            features[i, :, : lengths[i]] = it["features"]
        inputs = {"features": features, "feature_lengths": lengths}
    return {
        **inputs,
        "targets": targets,
        "target_lengths": target_lengths,
        "texts": [it["text"] for it in items],
        "durations": torch.tensor([it["duration"] for it in items]),
        "indices": [it["index"] for it in items],
        "skipped_undecodable": skipped,
    }
