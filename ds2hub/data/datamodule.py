"""`SpeechDataModule`: any speech corpus (hub id, parquet or audio folder, release layout) as CTC
batches, with the paper's SortaGrad, duration-based batching, augmentation and bad-data filtering."""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets
import lightning as L
from torch.utils.data import DataLoader

from ds2hub.audio import AudioDecodeError, audio_duration
from ds2hub.data.augment import AugmentConfig, Augmenter
from ds2hub.data.corpora import available_layouts, detect_layout
from ds2hub.data.dataset import (
    SpeechDataset,
    StreamingSpeechDataset,
    audio_source,
    collate,
    duration_problem,
)
from ds2hub.data.loader import EpochLoader, EpochOrder
from ds2hub.data.sampler import DurationBatchSampler
from ds2hub.features import FeatureConfig, LogSpectrogram
from ds2hub.tokenizers import Tokenizer

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
            ds = ds.to_iterable_dataset()
    else:
        ds = datasets.load_dataset(
            path, name, split=split, data_dir=data_dir, revision=revision, streaming=streaming
        )
    columns = ds.column_names or []
    if audio_column not in columns:
        raise KeyError(f"{path}[{split}] has no audio column {audio_column!r}; columns: {columns}")
    return ds.cast_column(audio_column, datasets.Audio(decode=False))


def holdout_groups(values: list[str], fraction: float, seed: int) -> set[str]:
    """A random `fraction` of the distinct `values` (e.g. whole words or speakers)."""
    distinct = sorted(set(values))
    rng = random.Random(seed)
    return set(rng.sample(distinct, max(1, round(fraction * len(distinct)))))


@dataclass(frozen=True)
class ExtraCorpus:
    """Another corpus mixed into the training split (more speakers, synthetic speech ...)."""

    path: str
    split: str = "train"
    text_column: str = "text"
    name: str | None = None
    layout: str = "auto"


def _already_collated(batch: dict) -> dict:
    return batch


class SpeechDataModule(L.LightningDataModule):
    """Speech corpora from Hugging Face `datasets`, filtered and batched for CTC training.

    Args:
        tokenizer: the output vocabulary; if it must learn one (Mandarin characters,
            SentencePiece) it is fitted here on the training transcripts.
        path: hub id, local folder (parquet, `audiofolder`), or release folder (AISHELL-1,
            Common Voice).
        name: the dataset configuration (e.g. `clean` for LibriSpeech).
        data_dir / revision: sub-folder and hub revision.
        layout: `auto` (detect), `datasets`, `aishell`, `commonvoice` or a plugin's layout.
        train_split / val_split / test_split / predict_split: split names (`datasets` slicing such
            as `train[:90%]` works too). A None test split means the recipe has no test data
            (`ds2hub test` then refuses, rather than reporting validation figures as test).
        audio_column / text_column: column names of the audio and the transcript.
        holdout_column: hold out whole groups of this column of the *train* split as validation
            data (speakers, words), instead of reading `val_split`.
        holdout_values / holdout_fraction / holdout_seed: which groups: listed, or a random share.
        test_holdout_values / test_holdout_fraction: further whole groups of the train split held
            out as *test* data, disjoint from the validation groups (which pick checkpoints and
            decoding weights, so they must not be reported as test).
        extra_train: corpora appended to the training split (audio and transcript columns only).
        min_duration / max_duration: training utterances outside this range (seconds) are dropped.
            Validation and test keep every utterance, however long (so figures compare with
            published ones); a long one gets a batch of its own.
        batch_size: utterances per batch (at most, when `max_batch_seconds` is set).
        max_batch_seconds: padded seconds of audio per training batch (duration-based batching).
        sortagrad: first epoch in increasing length order (Deep Speech 2, section 3.1).
        bucketing: batch utterances of similar length together (less padding).
        augment: training augmentation (noise, speed, SpecAugment).
        streaming: read the training split as a stream (corpora larger than the disk).
        num_workers: DataLoader worker processes.
        seed: seed of batch order and holdout.
        features: the spectrogram front end.
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
        augment: AugmentConfig = AugmentConfig(),
        streaming: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        features: FeatureConfig = FeatureConfig(),
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
        self.audio_column, self.text_column = audio_column, text_column
        self.holdout_column, self.holdout_values = holdout_column, holdout_values
        self.holdout_fraction, self.holdout_seed = holdout_fraction, holdout_seed
        self.test_holdout_values, self.test_holdout_fraction = (
            test_holdout_values,
            test_holdout_fraction,
        )
        self.extra_train = [
            e if isinstance(e, ExtraCorpus) else ExtraCorpus(**e) for e in extra_train or []
        ]
        self.min_duration, self.max_duration = min_duration, max_duration
        self.batch_size, self.max_batch_seconds = batch_size, max_batch_seconds
        self.sortagrad, self.bucketing, self.streaming = sortagrad, bucketing, streaming
        self.augment = augment
        self.num_workers, self.seed = num_workers, seed
        self.features = features
        self.frontend = LogSpectrogram(features)
        self.datasets: dict[str, SpeechDataset | StreamingSpeechDataset] = {}
        self.dropped: dict[str, Counter[str]] = {}
        if holdout_column and not (holdout_values or holdout_fraction):
            raise ValueError("holdout_column needs holdout_values or a holdout_fraction > 0")
        if (test_holdout_values or test_holdout_fraction) and not holdout_column:
            raise ValueError("test_holdout_values/test_holdout_fraction need a holdout_column")
        if tokenizer.needs_fit:
            # The vocabulary must exist before the model is built (its output layer size).
            texts = self._train_texts()
            tokenizer.fit(texts)
            log.info("fitted %s on %d training transcripts", tokenizer, len(texts))

    # --- loading ---------------------------------------------------------------------------------
    def _load(self, split: str, streaming: bool = False):
        return load_split(
            self.path,
            split,
            self.name,
            self.audio_column,
            self.data_dir,
            self.revision,
            self.layout,
            streaming,
        )

    @property
    def _test_held_out(self) -> bool:
        return bool(self.test_holdout_values or self.test_holdout_fraction)

    def _heldout(self, ds: datasets.Dataset) -> tuple[set[str], set[str]]:
        """The validation groups and the test groups (disjoint) of the train split."""
        values = [str(v) for v in ds[self.holdout_column]]
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
            raise ValueError(f"groups held out for both validation and test: {sorted(val & test)}")
        return val, test

    def has_stage(self, stage: str) -> bool:
        """Whether the recipe gives `stage` (train, val, test, predict) any data."""
        if stage == "test":
            return self.splits["test"] is not None or self._test_held_out
        if stage == "predict":
            return self.splits["predict"] is not None or self._test_held_out
        return True

    def describe(self, stage: str) -> str:
        """Where a stage's utterances come from, in words (for logs and model cards)."""
        corpus = self.path + (f" ({self.name})" if self.name else "")
        if self.holdout_column and stage in ("val", "test", "predict"):
            val_or_test = "val" if stage == "val" else "test"
            if val_or_test == "val" or self._test_held_out:
                listed = self.holdout_values if val_or_test == "val" else self.test_holdout_values
                share = (
                    self.holdout_fraction if val_or_test == "val" else self.test_holdout_fraction
                )
                which = ", ".join(map(str, listed)) if listed else f"a random {share:.0%}"
                return (
                    f"held-out {self.holdout_column} groups ({which}) of "
                    f"{self.splits['train']} of {corpus}"
                )
        split = self.splits.get(stage)
        if split is None:
            return f"no {stage} data"
        return f"{split} of {corpus}"

    def _split_rows(self, stage: str) -> datasets.Dataset:
        """The rows of a stage: its split, minus or restricted to held-out groups, plus extras."""
        rows = self._own_rows(stage)
        if stage != "train" or not self.extra_train:
            return rows
        parts = [rows.select_columns([self.audio_column, self.text_column])]
        for extra in self.extra_train:
            ds = load_split(
                extra.path, extra.split, extra.name, self.audio_column, layout=extra.layout
            )
            ds = ds.select_columns([self.audio_column, extra.text_column])
            if extra.text_column != self.text_column:
                ds = ds.rename_column(extra.text_column, self.text_column)
            parts.append(ds.cast(parts[0].features))
            log.info("train: + %d utterances from %s[%s]", len(ds), extra.path, extra.split)
        return datasets.concatenate_datasets(parts)

    def _own_rows(self, stage: str) -> datasets.Dataset:
        """A stage's rows: its own split, or whole groups held out of (or kept in) the train split."""
        if not self.has_stage(stage):
            raise ValueError(
                f"this recipe has no {stage} data (data.test_split is null and no "
                "data.test_holdout_values/test_holdout_fraction): validation data is never "
                "reported as test; run `ds2hub validate`, or configure a test split"
            )
        held_stage = stage == "val" or (stage in ("test", "predict") and self._test_held_out)
        if self.holdout_column and (stage == "train" or held_stage):
            ds = self._load(self.splits["train"])
            val, test = self._heldout(ds)
            groups = {"train": None, "val": val}.get(stage, test)
            column = [str(v) for v in ds[self.holdout_column]]
            if groups is None:  # training: everything not held out
                keep = [i for i, v in enumerate(column) if v not in val and v not in test]
            else:
                keep = [i for i, v in enumerate(column) if v in groups]
            log.info(
                "%s: %d rows (%d validation and %d test %s groups held out)",
                stage, len(keep), len(val), len(test), self.holdout_column,
            )  # fmt: skip
            return ds.select(keep)
        return self._load(self.splits[stage])

    def _train_texts(self) -> list[str]:
        if self.streaming:
            return [
                row[self.text_column] for row in self._load(self.splits["train"], streaming=True)
            ]
        return self._split_rows("train")[self.text_column]

    # --- filtering ------------------------------------------------------------------------------
    def _problem(self, text: str | None, training: bool = True) -> str | None:
        """Why a transcript cannot train (or, with training=False, be scored), or None."""
        if not text or not text.strip():
            return "empty transcript"
        # Evaluation keeps such utterances: their unknown characters count as errors, as they should.
        if training and self.tokenizer.uncovered(text):
            return "characters outside the tokenizer"
        if not self.tokenizer.encode(text):
            return "empty transcript"
        return None

    def _filter(self, ds: datasets.Dataset, stage: str) -> tuple[datasets.Dataset, list[float]]:
        """Drops utterances that cannot train or score, counting each reason in the log."""
        dropped: Counter[str] = Counter()
        keep, durations = [], []
        has_duration = "duration" in ds.column_names
        texts = ds[self.text_column]
        for i, text in enumerate(texts):
            reason = self._problem(text, training=stage == "train")
            seconds = 0.0
            if reason is None:
                try:
                    row = ds[i]
                    seconds = (
                        float(row["duration"])
                        if has_duration
                        else audio_duration(audio_source(row[self.audio_column]))
                    )
                except (AudioDecodeError, OSError, TypeError, ValueError) as error:
                    reason = "undecodable audio"
                    log.debug("%s[%d]: %s", stage, i, error)
            if stage == "train":
                reason = reason or duration_problem(seconds, self.min_duration, self.max_duration)
            elif reason is None and seconds <= 0:
                reason = "zero-length audio"  # nothing to decode; scored by nobody
            if reason:
                dropped[reason] += 1
                continue
            keep.append(i)
            durations.append(seconds)
        for reason, count in sorted(dropped.items()):
            log.warning("%s: dropped %d utterance(s): %s", stage, count, reason)
        self.dropped[stage] = dropped
        if not keep:
            raise ValueError(
                f"{stage} data of {self.path} has no usable utterances ({dict(dropped)})"
            )
        return ds.select(keep), durations

    def _dataset(self, stage: str) -> SpeechDataset | StreamingSpeechDataset:
        if stage not in self.datasets:
            augmenter = (
                Augmenter(self.augment) if stage == "train" and self.augment.enabled else None
            )
            if stage == "train" and self.streaming:
                rank, world = self._rank_world()
                stream = self._load(self.splits["train"], streaming=True)
                if world > 1:
                    from datasets.distributed import split_dataset_by_node

                    stream = split_dataset_by_node(stream, rank=rank, world_size=world)
                self.datasets[stage] = StreamingSpeechDataset(
                    stream, self.tokenizer, self.frontend, self.audio_column, self.text_column,
                    self.batch_size, self.min_duration, self.max_duration, augmenter, self._problem,
                )  # fmt: skip
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
            log.info("%s: %d utterances, %.1f min", stage, len(ds), sum(durations) / 60)
        return self.datasets[stage]

    def setup(self, stage: str) -> None:
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
        }[stage]
        for name in wanted:
            self._dataset(name)

    # --- batching -------------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return 0, 1
        if trainer._accelerator_connector.use_distributed_sampler:
            raise ValueError(
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
        common = {
            "num_workers": self.num_workers,
            "collate_fn": collate,
            "persistent_workers": self.num_workers > 0,
        }
        if isinstance(dataset, StreamingSpeechDataset):
            common["collate_fn"] = _already_collated  # the stream yields whole batches
            if stage == "train" and isinstance(dataset, EpochOrder):
                # Workers are started afresh each epoch, so they see the epoch and resume point.
                common["persistent_workers"] = False
                return EpochLoader(
                    dataset, dataset, self._current_epoch, lookahead=1, batch_size=None, **common
                )
            return DataLoader(dataset, batch_size=None, **common)
        sampler = self.batch_sampler(stage)
        if stage == "train":  # the epoch and the resume point come from the Trainer
            return EpochLoader(
                dataset, sampler, self._current_epoch, batch_sampler=sampler, **common
            )
        return DataLoader(dataset, batch_sampler=sampler, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
