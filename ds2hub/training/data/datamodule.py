"""`SpeechDataModule`: any speech corpus (hub id, parquet or audio folder, release layout) as CTC
batches, with the paper's SortaGrad, duration-based batching, augmentation and bad-data filtering."""

from __future__ import annotations

import logging
import math
import os
import random
import re
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader

from ds2hub.audio import AudioDecodeError, audio_duration, load_audio
from ds2hub.errors import ConfigError
from ds2hub.features import FeatureConfig, LogSpectrogram
from ds2hub.tokenizers import Tokenizer
from ds2hub.training.data.augment import Augmenter, Transform, apply_batch_masks, build_transforms
from ds2hub.training.data.corpora import available_layouts, detect_layout
from ds2hub.training.data.dataset import (
    SpeechDataset,
    StreamingSpeechDataset,
    StreamOrder,
    audio_source,
    collate,
)
from ds2hub.training.data.loader import EpochLoader
from ds2hub.training.data.sampler import DurationBatchSampler

log = logging.getLogger(__name__)


def load_split(
    path: str,
    split: str,
    name: str | None = None,
    audio_column: str = "audio",
    data_dir: str | None = None,
    revision: str | None = None,
    layout: str = "auto",
    streaming: bool = False,
) -> datasets.Dataset | datasets.IterableDataset:
    """Loads one split with audio left encoded (`Audio(decode=False)`: ds2hub decodes it).

    `path` is a hub id (`openslr/librispeech_asr`), a local folder `datasets` reads (parquet,
    `audiofolder`), or a release folder of a known layout (AISHELL-1, Common Voice); `layout`
    `auto` detects which.
    """
    kind = detect_layout(path) if layout == "auto" else (None if layout == "datasets" else layout)
    if kind is not None:
        loaders = available_layouts()
        if kind not in loaders:
            raise KeyError(f"unknown corpus layout {kind!r}; known: {sorted(loaders)}")
        ds = loaders[kind](Path(path), split)
        if streaming:
            # Keep the row count, as a hub dataset's card gives it (DDP streams need it).
            ds = _with_size(ds.to_iterable_dataset(), split, len(ds))
    elif streaming and (rows := stream_slice(split)) is not None:
        # `datasets` reads slices (`train[:800]`) of map-style splits only; a stream takes them
        # with skip/take (the same rows, as the slice names absolute row numbers).
        base, start, stop = rows
        ds = load_split(path, base, name, audio_column, data_dir, revision, layout, True)
        known = stream_size(ds, base)
        size = stop - start if known is None else max(0, min(stop, known) - start)
        return _with_size(ds.skip(start).take(stop - start), split, size)
    else:
        try:
            with _no_bars_for_local(path):
                ds = datasets.load_dataset(
                    path,
                    name,
                    split=split,
                    data_dir=data_dir,
                    revision=revision,
                    streaming=streaming,
                )
        except Exception as error:  # noqa: BLE001 - a non-UTF-8 metadata file, however wrapped
            cause: BaseException | None = error
            while cause is not None and not isinstance(cause, UnicodeDecodeError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise ConfigError(
                f"{path} [{split}]: a metadata file is not UTF-8 text ({cause.reason}, "
                f"byte {cause.object[cause.start : cause.start + 1]!r}); save it as UTF-8"
            ) from error
    columns = ds.column_names or []
    if audio_column not in columns:
        raise KeyError(f"{path}[{split}] has no audio column {audio_column!r}; columns: {columns}")
    return ds.cast_column(audio_column, datasets.Audio(decode=False))


@contextmanager
def _no_bars_for_local(path: str) -> Iterator[None]:
    """`datasets`' progress bars off while it reads a local folder, where they say "Downloading
    data" of files already here and "Generating ... split" for a fraction of a second; a hub
    corpus keeps them, and so does a user who set `HF_DATASETS_DISABLE_PROGRESS_BARS=0`."""
    quiet = (
        Path(path).expanduser().exists()
        and not datasets.are_progress_bars_disabled()
        and datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is None
    )
    if quiet:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if quiet:
            datasets.enable_progress_bars()


def _with_size(stream: datasets.IterableDataset, split: str, rows: int) -> datasets.IterableDataset:
    stream.info.splits = datasets.SplitDict()
    stream.info.splits.add(datasets.SplitInfo(name=split, num_examples=rows))
    return stream


_SLICE = re.compile(r"^([\w.-]+)\[(.*)\]$")


def stream_slice(split: str) -> tuple[str, int, int] | None:
    """`(split, start, stop)` of a sliced split name (`train[:800]`, `train[100:900]`), None for a
    plain name. Streams have no length to take a percentage of: `train[:10%]` is refused."""
    match = _SLICE.match(split.strip())
    if match is None:
        return None
    base, spec = match.groups()
    lo, sep, hi = spec.partition(":")
    start, stop = (lo or "0").strip(), hi.strip()
    if not (sep and start.isdecimal() and stop.isdecimal() and int(start) <= int(stop)):
        raise ConfigError(
            f"split {split!r}: a streamed corpus takes slices of absolute rows with an end, "
            f"like '{base}[:800]' or '{base}[100:900]' (no percentages or negative indices)"
        )
    return base, int(start), int(stop)


def stream_size(stream: datasets.IterableDataset, split: str) -> int | None:
    """Rows of a streamed split as its metadata gives them (a hub card's `dataset_info`, or a
    release layout's count), or None if unknown; `a+b` adds the parts."""
    known = stream.info.splits or {}
    sizes = [known[part].num_examples if part in known else 0 for part in split.split("+")]
    return sum(sizes) if all(sizes) else None


def rank_share(stream: datasets.IterableDataset, rank: int, world: int) -> datasets.IterableDataset:
    """One DDP rank's part of a stream: whole shards (files) when there are at least as many as
    ranks, so each rank reads, and re-reads when it runs short, only its own files
    (`split_dataset_by_node` would reassign them on every reshuffle, and read every file on every
    rank when the ranks do not divide the shards). With fewer shards, every `world`-th row; a rank
    that runs short then re-reads a reshuffled stream and may repeat other ranks' utterances."""
    if stream.num_shards >= world:
        return stream.shard(num_shards=world, index=rank, contiguous=False)
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(stream, rank=rank, world_size=world)


class GroupFilter:
    """Keeps the rows whose `column` is (or, with keep=False, is not) one of `groups`."""

    def __init__(self, column: str, groups: set[str], keep: bool) -> None:
        self.column, self.groups, self.keep = column, groups, keep

    def __call__(self, row: dict) -> bool:
        return (str(row[self.column]) in self.groups) == self.keep


def holdout_groups(values: list[str], fraction: float, seed: int) -> set[str]:
    """A random `fraction` of the distinct `values` (e.g. whole words or speakers)."""
    distinct = sorted(set(values))
    return set(random.Random(seed).sample(distinct, max(1, round(fraction * len(distinct)))))


@dataclass(frozen=True)
class ExtraCorpus:
    """Another corpus mixed into the training split (more speakers, synthetic speech ...)."""

    path: str
    split: str = "train"
    text_column: str = "text"
    name: str | None = None
    layout: str = "auto"


def _worker_init(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM and SIGINT to the main process, which ends them when it
    stops: a signal sent to the whole process group (a job scheduler's stop, Ctrl+C) would
    otherwise kill them mid-batch, and the main process fail with "DataLoader worker (pid ...)
    is killed by signal" instead of writing its checkpoint (`StopOnSignal`)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.environ.get("PL_SEED_WORKERS") == "1":  # what Lightning adds when no init is given
        pl_worker_init_function(worker_id)


def _already_collated(batch: dict) -> dict:
    return batch


class SpeechDataModule(L.LightningDataModule):
    """Speech corpora from Hugging Face `datasets`, filtered and batched for CTC training.

    Args:
        tokenizer: the output vocabulary (fitted on the training transcripts if it must learn one).
        path: hub id, local folder (parquet, `audiofolder`), or release folder (see `layout`).
        name: the dataset configuration (e.g. `clean` for LibriSpeech).
        data_dir / revision: sub-folder and hub revision.
        layout: `auto` (detect), `datasets`, `aishell`, `commonvoice` or a plugin's layout.
        train_split / val_split / test_split / predict_split: split names (slices such as
            `train[:90%]` too); a None test split: no test data (`ds2hub test` refuses).
        audio_column / text_column: column names of the audio and the transcript.
        holdout_column: validate on whole groups (speakers, words) of this column held out of the
            *train* split, instead of reading `val_split`.
        holdout_values / holdout_fraction / holdout_seed: which groups: listed, or a random share.
        test_holdout_values / test_holdout_fraction: further held-out groups as *test* data,
            disjoint from the validation groups (which pick checkpoints, so are no test).
        extra_train: corpora appended to the training split (audio and transcript columns only).
        min_duration / max_duration: training utterances outside this range (seconds) are dropped
            (evaluation keeps every one, however long, so figures compare with published ones).
        batch_size: utterances per batch (at most, when `max_batch_seconds` is set).
        max_batch_seconds: padded seconds of audio per training batch (duration-based batching).
        sortagrad: first epoch in increasing length order (Deep Speech 2, section 3.1).
        bucketing: batch utterances of similar length together (less padding).
        augment: training-only `Transform`s (`ds2hub.training.data.augment`), applied in order.
        streaming: stream the training split (and `extra_train`), for corpora larger than the
            disk; needs `sortagrad: false` and holdouts as listed values.
        shuffle_buffer: streams: utterances in the shuffle buffer (0: stream order), and in each
            window sorted by length for `bucketing`.
        stream_batches_per_epoch: streams: exactly this many batches per epoch and rank (passing
            over the stream again if it runs short). None: one pass per epoch; under DDP, the
            split's known size / (ranks x batch_size), as every rank must take as many steps.
        num_workers: DataLoader worker processes.
        seed: seed of batch order and holdout.
        features: the spectrogram front end.
        frontend_on_device: the workers decode, apply waveform transforms and draw SpecAugment's
            masks; the spectrogram, its normalisation and the masks are computed in the training
            step on its device (`LogSpectrogram.batch`), with the same result. For GPUs that
            consume audio faster than the workers make features (experiments/overheads).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        path: str,
        name: str | None = None,
        data_dir: str | None = None,
        revision: str | None = None,
        layout: str = "auto",
        train_split: str = "train",
        val_split: str = "validation",
        test_split: str | None = "test",
        predict_split: str | None = None,
        audio_column: str = "audio",
        text_column: str = "text",
        holdout_column: str | None = None,
        holdout_values: list[str] | None = None,
        holdout_fraction: float = 0.0,
        holdout_seed: int = 0,
        test_holdout_values: list[str] | None = None,
        test_holdout_fraction: float = 0.0,
        extra_train: list[ExtraCorpus] | None = None,
        min_duration: float = 0.05,
        max_duration: float = 20.0,
        batch_size: int = 16,
        max_batch_seconds: float | None = None,
        sortagrad: bool = True,
        bucketing: bool = True,
        augment: list[Transform] | None = None,
        streaming: bool = False,
        shuffle_buffer: int = 1000,
        stream_batches_per_epoch: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        features: FeatureConfig = FeatureConfig(),
        frontend_on_device: bool = False,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        expanded = Path(path).expanduser()
        self.path = str(expanded) if expanded.exists() else path
        self.name, self.data_dir, self.revision, self.layout = name, data_dir, revision, layout
        self.splits = {
            "train": train_split,
            "val": val_split,
            "test": test_split,
            "predict": predict_split or test_split,
        }
        self._predict_split_given = predict_split is not None
        self.audio_column, self.text_column = audio_column, text_column
        self.holdout_column, self.holdout_values = holdout_column, holdout_values
        self.holdout_fraction, self.holdout_seed = holdout_fraction, holdout_seed
        self.test_holdout_values = test_holdout_values
        self.test_holdout_fraction = test_holdout_fraction
        self.extra_train = [
            e if isinstance(e, ExtraCorpus) else ExtraCorpus(**e) for e in extra_train or []
        ]
        self.min_duration, self.max_duration = min_duration, max_duration
        self.batch_size, self.max_batch_seconds = batch_size, max_batch_seconds
        self.sortagrad, self.bucketing, self.streaming = sortagrad, bucketing, streaming
        self.shuffle_buffer = shuffle_buffer
        self.stream_batches_per_epoch = stream_batches_per_epoch
        self.num_workers, self.seed = num_workers, seed
        self.features = features
        self.frontend = LogSpectrogram(features)
        # Plain dicts too: `ds2hub push` rebuilds the DataModule from a run's saved config.yaml.
        # Built here, so a list it cannot run is refused when the recipe is read.
        self.augment = build_transforms(augment)
        self.augmenter = Augmenter(self.augment, features) if self.augment else None
        self.frontend_on_device = frontend_on_device
        if frontend_on_device and self.augmenter is not None:
            self.augmenter.check_masks_only()
        self._device_frontends: dict[torch.device, LogSpectrogram] = {}
        self.datasets: dict[str, SpeechDataset | StreamingSpeechDataset] = {}
        self.dropped: dict[str, Counter[str]] = {}
        self._train_loader: DataLoader | None = None
        if holdout_column and not (holdout_values or holdout_fraction):
            raise ConfigError("holdout_column needs holdout_values or a holdout_fraction > 0")
        if (test_holdout_values or test_holdout_fraction) and not holdout_column:
            raise ConfigError("test_holdout_values/test_holdout_fraction need a holdout_column")
        if streaming:
            self._check_streaming()
        if tokenizer.needs_fit:
            # The vocabulary must exist before the model is built (its output layer size).
            texts = self._train_texts()
            tokenizer.fit(texts)
            log.info("fitted %s on %d training transcripts", tokenizer, len(texts))

    def _check_streaming(self) -> None:
        """Refuses, before any data is read, what a stream cannot do."""
        if self.sortagrad:
            raise ConfigError(
                "data.streaming: SortaGrad visits the first epoch shortest utterance first, which "
                "needs every duration before the first batch; a stream has them only as it is "
                "read. Set data.sortagrad: false (length bucketing still applies per window)"
            )
        if self.holdout_fraction or self.test_holdout_fraction:
            raise ConfigError(
                "data.streaming: holdout_fraction/test_holdout_fraction draw from every distinct "
                f"{self.holdout_column!r} value, a full pass over the stream before training; "
                "list the held-out groups with data.holdout_values (and "
                "data.test_holdout_values), or set data.streaming: false"
            )
        if self.max_batch_seconds is not None and self.max_batch_seconds < self.max_duration:
            raise ConfigError(
                f"data.streaming: max_batch_seconds={self.max_batch_seconds} is shorter than "
                f"max_duration={self.max_duration}, so a long streamed utterance fits no batch; "
                "raise max_batch_seconds or lower max_duration"
            )
        if self.shuffle_buffer < 0:
            raise ConfigError(f"data.shuffle_buffer must be >= 0, not {self.shuffle_buffer}")
        if self.stream_batches_per_epoch is not None and self.stream_batches_per_epoch < 1:
            raise ConfigError(
                f"data.stream_batches_per_epoch must be >= 1, not {self.stream_batches_per_epoch}"
            )

    # --- loading ---------------------------------------------------------------------------------
    def _load(self, split: str, streaming: bool = False):
        source = self.name, self.audio_column, self.data_dir, self.revision, self.layout
        return load_split(self.path, split, *source, streaming)

    def _held_stage(self, stage: str) -> bool:
        """Whether a stage's rows are groups held out of the train split (validation, and test or
        predict with a test holdout, unless a predict split is named)."""
        if not self.holdout_column or (stage == "predict" and self._predict_split_given):
            return False
        test_held_out = self.test_holdout_values or self.test_holdout_fraction
        return stage == "val" or bool(stage in ("test", "predict") and test_held_out)

    def _heldout(self, values: list[str]) -> tuple[set[str], set[str]]:
        """The validation groups and the test groups (disjoint), given the train split's
        holdout column (streams list their groups, see `_check_streaming`, and pass none)."""
        if self.holdout_values:
            val = {str(v) for v in self.holdout_values}
        else:
            val = holdout_groups(values, self.holdout_fraction, self.holdout_seed)
        if self.test_holdout_values:
            test = {str(v) for v in self.test_holdout_values}
        elif self.test_holdout_fraction:
            rest = [v for v in values if v not in val]
            n = max(1, round(self.test_holdout_fraction * len(set(values))))
            test = holdout_groups(rest, n / max(1, len(set(rest))), self.holdout_seed + 1)
        else:
            test = set()
        if val & test:
            raise ConfigError(f"groups held out for both validation and test: {sorted(val & test)}")
        return val, test

    def _train_stream(self) -> tuple[datasets.IterableDataset, int | None]:
        """The training data as one unshuffled stream (the train split without its held-out groups,
        then each extra corpus) and its size if known (held-out rows included: none are counted)."""
        split = self.splits["train"]
        stream = self._load(split, streaming=True)
        size = stream_size(stream, split)
        if self.holdout_column:
            if self.holdout_column not in (stream.column_names or []):
                raise KeyError(
                    f"{self.path}[{split}] has no holdout column {self.holdout_column!r}; "
                    f"columns: {stream.column_names}"
                )
            val, test = self._heldout([])
            stream = stream.filter(GroupFilter(self.holdout_column, val | test, keep=False))
        return self._with_extras(stream, size)

    def _with_extras(self, rows, size: int | None = None):
        """`rows` then each `extra_train` corpus (audio and transcript columns only), and the total
        row count if every part's is known (`size`: that of `rows`). Concatenated, not interleaved:
        a stream's shuffle mixes the corpora's shards in its buffer, each utterance once a pass."""
        if not self.extra_train:
            return rows, size
        streaming = isinstance(rows, datasets.IterableDataset)
        parts = [rows.select_columns([self.audio_column, self.text_column])]
        for extra in self.extra_train:
            ds = load_split(
                extra.path, extra.split, extra.name, self.audio_column, layout=extra.layout,
                streaming=streaming,
            )  # fmt: skip
            extra_size = stream_size(ds, extra.split) if streaming else len(ds)
            size = None if size is None or extra_size is None else size + extra_size
            if not streaming:
                log.info("train: + %d utterances from %s[%s]", len(ds), extra.path, extra.split)
            ds = ds.select_columns([self.audio_column, extra.text_column])
            if extra.text_column != self.text_column:
                ds = ds.rename_column(extra.text_column, self.text_column)
            parts.append(ds.cast(parts[0].features))
        return datasets.concatenate_datasets(parts), size

    def has_stage(self, stage: str) -> bool:
        """Whether the recipe gives `stage` (train, val, test, predict) any data."""
        if stage in ("test", "predict"):
            return self.splits[stage] is not None or self._held_stage(stage)
        return True

    def source_split(self, stage: str) -> str | None:
        """The `load_dataset` split a stage's utterances come from, as the hub's model-index
        `split` names it; None: no data, or groups held out of the train split (which `split`
        cannot name: `train` would read as figures measured on the training data)."""
        return None if self._held_stage(stage) else self.splits.get(stage)

    def describe(self, stage: str) -> str:
        """Where a stage's utterances come from, in words (for logs and model cards)."""
        corpus = self.path + (f" ({self.name})" if self.name else "")
        split = self.splits.get(stage)
        if self._held_stage(stage):
            val = stage == "val"
            listed = self.holdout_values if val else self.test_holdout_values
            share = self.holdout_fraction if val else self.test_holdout_fraction
            which = ", ".join(map(str, listed)) if listed else f"a random {share:.0%}"
            split = f"held-out {self.holdout_column} groups ({which}) of {self.splits['train']}"
        return f"no {stage} data" if split is None else f"{split} of {corpus}"

    def _split_rows(self, stage: str) -> datasets.Dataset:
        """A stage's rows: its own split, or whole groups held out of (or kept in) the train split;
        training's followed by the extra corpora."""
        if not self.has_stage(stage):
            raise ConfigError(
                f"this recipe has no {stage} data (data.test_split is null and no "
                "data.test_holdout_values/test_holdout_fraction): validation data is never "
                "reported as test; run `ds2hub validate`, or configure a test split"
            )
        held_stage = self._held_stage(stage)
        if held_stage and self.streaming:
            return self._streamed_heldout(stage)
        if self.holdout_column and (stage == "train" or held_stage):
            ds = self._load(self.splits["train"])
            column = [str(v) for v in ds[self.holdout_column]]  # read once: it decodes no audio
            val, test = self._heldout(column)
            groups = {"train": val | test, "val": val}.get(stage, test)
            # Training keeps the rows outside every held-out group, the others those inside theirs.
            keep = [i for i, v in enumerate(column) if (v in groups) != (stage == "train")]
            log.info(
                "%s: %d rows (%d validation and %d test %s groups held out)",
                stage, len(keep), len(val), len(test), self.holdout_column,
            )  # fmt: skip
            rows = ds.select(keep)
        else:
            rows = self._load(self.splits[stage])
        return self._with_extras(rows)[0] if stage == "train" else rows

    def _streamed_heldout(self, stage: str) -> datasets.Dataset:
        """A held-out stage of a streamed corpus: its groups' rows, gathered in one pass over the
        train split's stream and kept in memory (held-out groups are small)."""
        val, test = self._heldout([])
        groups = val if stage == "val" else test
        stream = self._load(self.splits["train"], streaming=True)
        rows = list(stream.filter(GroupFilter(self.holdout_column, groups, keep=True)))
        log.info(
            "%s: %d rows of held-out %s groups %s, read from the stream",
            stage, len(rows), self.holdout_column, sorted(groups),
        )  # fmt: skip
        if not rows:
            raise ConfigError(
                f"no rows of {self.holdout_column} {sorted(groups)} in {self.describe('train')}"
            )
        return datasets.Dataset.from_list(rows, features=stream.features)

    def _train_texts(self) -> list[str]:
        if self.streaming:
            stream, _ = self._train_stream()
            return [row[self.text_column] for row in stream.select_columns([self.text_column])]
        return self._split_rows("train")[self.text_column]

    # --- filtering ------------------------------------------------------------------------------
    def _check(self, row: dict[str, Any], training: bool = True) -> tuple[str | None, float]:
        """Why a row cannot train (or, with training=False, be scored), or None, and its duration
        in seconds, from a `duration` column or the audio header (nothing is decoded)."""
        text = row.get(self.text_column)
        if not text or not text.strip():
            return "empty transcript", 0.0
        if training and self.tokenizer.uncovered(text):
            return "characters outside the tokenizer", 0.0
        # Evaluation keeps what the vocabulary cannot write ("911" for a-z): those words count as
        # errors, as they should. Only a transcript with nothing to score is dropped.
        if not (self.tokenizer.encode(text) if training else self.tokenizer.reference(text)):
            return "empty transcript", 0.0
        try:
            if row.get("duration") is not None:
                seconds = float(row["duration"])
            else:
                seconds = audio_duration(audio_source(row[self.audio_column]))
        except (AudioDecodeError, OSError, TypeError, ValueError) as error:
            log.debug("undecodable audio: %s", error)
            return "undecodable audio", 0.0
        if seconds <= 0:
            return "zero-length audio", seconds  # nothing to decode; scored by nobody
        # Evaluation keeps every other length (see `min_duration`).
        if training and seconds < self.min_duration:
            return "shorter than min_duration", seconds
        if training and seconds > self.max_duration:
            return "longer than max_duration", seconds
        return None, seconds

    def _filter(self, ds: datasets.Dataset, stage: str) -> tuple[datasets.Dataset, list[float]]:
        """Drops utterances that cannot train or score, counting each reason in the log; returns
        the rows kept and their durations."""
        dropped: Counter[str] = Counter()
        keep, durations = [], []
        for i in range(len(ds)):
            reason, seconds = self._check(ds[i], training=stage == "train")
            if reason:
                dropped[reason] += 1
                continue
            keep.append(i)
            durations.append(seconds)
        for reason, count in sorted(dropped.items()):
            log.warning("%s: dropped %d utterance(s): %s", stage, count, reason)
        self.dropped[stage] = dropped
        if not keep:
            raise ConfigError(
                f"{stage} data of {self.path} has no usable utterances ({dict(dropped)})"
            )
        return ds.select(keep), durations

    def _dataset(self, stage: str) -> SpeechDataset | StreamingSpeechDataset:
        if stage not in self.datasets:
            augmenter = self.augmenter if stage == "train" else None
            if stage == "train" and self.streaming:
                self.datasets[stage] = self._streaming_train(augmenter)
                return self.datasets[stage]
            ds, durations = self._filter(self._split_rows(stage), stage)
            self.datasets[stage] = SpeechDataset(
                ds,
                self.tokenizer,
                self.frontend,
                self.audio_column,
                self.text_column,
                durations,
                augmenter,
            )
            self.datasets[stage].frontend_on_device = self.frontend_on_device
            log.info("%s: %d utterances, %.1f min", stage, len(ds), sum(durations) / 60)
        return self.datasets[stage]

    def training_waveforms(self, count: int) -> Iterator[torch.Tensor]:
        """Up to `count` training utterances as decoded (T,) audio, without augmentation: spread
        evenly over the split (the first ones of a stream). What the front end's statistics
        (`features.normalization: global`) are estimated from; utterances that do not decode are
        skipped (the training loader counts them)."""
        data = self._dataset("train").data
        if isinstance(data, datasets.IterableDataset):
            rows = iter(data)
        else:
            rows = (data[i] for i in range(0, len(data), max(1, len(data) // count)))
        for row in islice(rows, count):
            try:
                yield load_audio(audio_source(row[self.audio_column]))
            except AudioDecodeError:
                continue

    def _streaming_train(self, augmenter: Augmenter | None) -> StreamingSpeechDataset:
        """This rank's share of the training stream, batched: the same number of batches on every
        rank under DDP (refused here, at set-up, if that number cannot be known)."""
        rank, world = self._rank_world()
        stream, size = self._train_stream()
        per_epoch = self._stream_batches(world, size)
        if world > 1:
            stream = rank_share(stream, rank, world)
        order = StreamOrder(
            batch_size=self.batch_size,
            max_batch_seconds=self.max_batch_seconds,
            bucketing=self.bucketing,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            batches_per_epoch=per_epoch,
        )
        log.info(
            "train: streaming %s (rank %d of %d), %s",
            self.describe("train"), rank, world,
            f"{per_epoch} batches per epoch" if per_epoch else "one pass per epoch",
        )  # fmt: skip
        dataset = StreamingSpeechDataset(
            stream, self.tokenizer, self.frontend, self.audio_column, self.text_column, order,
            augmenter, self._check,
        )  # fmt: skip
        dataset.frontend_on_device = self.frontend_on_device
        return dataset

    def _stream_batches(self, world: int, size: int | None) -> int | None:
        """Batches per epoch and rank of a stream, None for one pass per epoch (as documented
        for `stream_batches_per_epoch`; refused under DDP when it cannot be known)."""
        if self.stream_batches_per_epoch is not None or world == 1:
            return self.stream_batches_per_epoch
        if self.max_batch_seconds is not None or size is None:
            unknown = (
                "the number of batches of a stream with max_batch_seconds"
                if self.max_batch_seconds is not None
                else f"the size of {self.describe('train')} (no num_examples in its metadata)"
            )
            raise ConfigError(
                "data.streaming under DDP: every rank must take the same number of steps, but "
                f"{unknown} is unknown; set data.stream_batches_per_epoch"
            )
        per_epoch = math.ceil(size / (world * self.batch_size))
        log.info(
            "train: %d rows in the stream's metadata -> %d batches per epoch on each of %d ranks",
            size, per_epoch, world,
        )  # fmt: skip
        return per_epoch

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._train_loader = None  # a new fit gets a new loader (and new workers)
            if self.max_batch_seconds and not self.streaming:
                self._reload_every_epoch()
        # `stage` is Lightning's TrainerFn, a str enum: look it up, never format it into a name.
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
        }[stage]
        for name in wanted:
            self._dataset(name)

    def _reload_every_epoch(self) -> None:
        """A padded-seconds budget packs a different number of batches each epoch, and Lightning
        counts a loader's batches when it loads it: reloading each epoch recounts. The reload gets
        the same `EpochLoader` back, so it costs a `len()`, not a restart of the workers."""
        trainer = self.trainer
        if trainer is not None and trainer.reload_dataloaders_every_n_epochs != 1:
            log.info("duration batches: reloading the training loader every epoch")
            trainer.reload_dataloaders_every_n_epochs = 1

    # --- batching -------------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return 0, 1
        if trainer._accelerator_connector.use_distributed_sampler:
            raise ConfigError(
                "SpeechDataModule shards its batches across DDP ranks itself: set trainer.use_distributed_sampler: false"
            )
        return trainer.global_rank, trainer.world_size

    def batch_sampler(self, stage: str) -> DurationBatchSampler:
        """The batch sampler of a (map-style) stage: SortaGrad and bucketing for training only."""
        dataset = self._dataset(stage)
        rank, world = self._rank_world()
        train = stage == "train"
        budget = self.max_batch_seconds or float("inf")
        if not train:  # evaluation keeps long utterances: one longer than the budget goes alone
            budget = max(budget, max(dataset.durations, default=0.0))
        return DurationBatchSampler(
            dataset.durations,
            max_batch_seconds=budget,
            max_batch_size=self.batch_size,
            bucketing=self.bucketing if train else True,  # evaluation: sorted, little padding
            sortagrad=self.sortagrad and train,
            shuffle=train,
            num_replicas=world,
            rank=rank,
            seed=self.seed,
            pad=train,  # evaluation: every utterance exactly once, however the ranks divide
        )

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _loader(self, stage: str) -> DataLoader:
        dataset = self._dataset(stage)
        common = dict(
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=_worker_init if self.num_workers > 0 else None,
        )
        if isinstance(dataset, StreamingSpeechDataset):  # training only; it yields whole batches
            # Workers are started afresh each epoch, so they see the epoch and resume point.
            common.update(collate_fn=_already_collated, persistent_workers=False)
            return EpochLoader(
                dataset, dataset, self._current_epoch, lookahead=1, batch_size=None, **common
            )
        sampler = self.batch_sampler(stage)
        if stage == "train":  # the epoch and the resume point come from the Trainer
            return EpochLoader(
                dataset, sampler, self._current_epoch, batch_sampler=sampler, **common
            )
        return DataLoader(dataset, batch_sampler=sampler, **common)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With `frontend_on_device`, a batch of padded samples gets its features here, on the
        step's device: the spectrogram, its normalisation, then SpecAugment's masks drawn in the
        workers. Other batches pass as they are."""
        if not isinstance(batch, dict) or "samples" not in batch:
            return batch
        device = batch["samples"].device
        frontend = self._device_frontends.get(device)
        if frontend is None:
            frontend = self._device_frontends[device] = LogSpectrogram(self.features).to(device)
        if self.features.global_stats:  # the statistics the task estimated when fit started
            frontend.load_state_dict(self.frontend.state_dict())
        with torch.no_grad():
            features, frames = frontend.batch(batch.pop("samples"), batch.pop("sample_lengths"))
            if any(batch["masks"]):
                features = apply_batch_masks(features, frames, batch["masks"])
        return {**batch, "features": features, "feature_lengths": frames}

    def train_dataloader(self) -> DataLoader:
        # One loader per fit: each epoch's reload (`_reload_every_epoch`) keeps its workers.
        if self._train_loader is None:
            self._train_loader = self._loader("train")
        return self._train_loader

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
