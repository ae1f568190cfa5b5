"""`SpeechDataModule`: any Hugging Face `datasets` corpus (hub id or local folder) as CTC batches."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import datasets
import lightning as L
from torch.utils.data import DataLoader

from ds2hub.audio import AudioDecodeError, audio_duration
from ds2hub.data.dataset import SpeechDataset, audio_source, collate
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
) -> datasets.Dataset:
    """Loads one split through `datasets.load_dataset`, with audio left encoded.

    `path` is a hub id (`openslr/librispeech_asr`) or a local folder; for a folder `datasets`
    picks the builder from its files (audio + `metadata.csv` -> audiofolder, parquet -> parquet).
    Audio is cast to `Audio(decode=False)`: ds2hub decodes it itself (any rate, any channels).
    """
    ds = datasets.load_dataset(path, name, split=split, data_dir=data_dir, revision=revision)
    if audio_column not in ds.column_names:
        raise KeyError(
            f"{path}[{split}] has no audio column {audio_column!r}; columns: {ds.column_names}"
        )
    return ds.cast_column(audio_column, datasets.Audio(decode=False))


class SpeechDataModule(L.LightningDataModule):
    """Speech corpora from Hugging Face `datasets`, filtered and batched for CTC training.

    Args:
        tokenizer: the output vocabulary; if it must learn one (Mandarin characters,
            SentencePiece) it is fitted here on the training transcripts.
        path: hub id or local folder (`audiofolder` layout, parquet, ...).
        name: the dataset configuration (e.g. `clean` for LibriSpeech).
        data_dir: sub-folder of `path` to read.
        revision: hub revision (branch, tag or commit).
        train_split / val_split / test_split / predict_split: split names (`datasets` slicing such
            as `train[:90%]` works too).
        audio_column / text_column: column names of the audio and the transcript.
        min_duration / max_duration: utterances outside this range (seconds) are dropped.
        batch_size: utterances per batch.
        num_workers: DataLoader worker processes.
        features: the spectrogram front end.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        path: str,
        name: str | None = None,
        data_dir: str | None = None,
        revision: str | None = None,
        train_split: str = "train",
        val_split: str = "validation",
        test_split: str = "test",
        predict_split: str | None = None,
        audio_column: str = "audio",
        text_column: str = "text",
        min_duration: float = 0.0,
        max_duration: float = 20.0,
        batch_size: int = 16,
        num_workers: int = 0,
        features: FeatureConfig = FeatureConfig(),
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.path = str(Path(path).expanduser()) if Path(path).expanduser().exists() else path
        self.name, self.data_dir, self.revision = name, data_dir, revision
        self.splits = {
            "train": train_split,
            "val": val_split,
            "test": test_split,
            "predict": predict_split or test_split,
        }
        self.audio_column, self.text_column = audio_column, text_column
        self.min_duration, self.max_duration = min_duration, max_duration
        self.batch_size, self.num_workers = batch_size, num_workers
        self.features = features
        self.frontend = LogSpectrogram(features)
        self.datasets: dict[str, SpeechDataset] = {}
        if tokenizer.needs_fit:
            # The vocabulary must exist before the model is built (its output layer size).
            train = self._load(self.splits["train"])
            tokenizer.fit(train[self.text_column])
            log.info("fitted %s on %d training transcripts", tokenizer, len(train))

    def _load(self, split: str) -> datasets.Dataset:
        return load_split(
            self.path, split, self.name, self.audio_column, self.data_dir, self.revision
        )

    def _filter(self, ds: datasets.Dataset, split: str) -> tuple[datasets.Dataset, list[float]]:
        """Drops utterances that cannot train or score, counting each reason in the log."""
        dropped: Counter[str] = Counter()
        keep, durations = [], []
        has_duration = "duration" in ds.column_names
        texts = ds[self.text_column]
        for i, text in enumerate(texts):
            if not text or not self.tokenizer.encode(text):
                dropped["empty transcript"] += 1
                continue
            try:
                seconds = (
                    float(ds[i]["duration"])
                    if has_duration
                    else audio_duration(audio_source(ds[i][self.audio_column]))
                )
            except (AudioDecodeError, OSError) as error:
                dropped["undecodable audio"] += 1
                log.debug("%s[%d]: %s", split, i, error)
                continue
            if not self.min_duration <= seconds <= self.max_duration:
                dropped["duration out of range"] += 1
                continue
            keep.append(i)
            durations.append(seconds)
        for reason, count in dropped.items():
            log.warning("%s: dropped %d utterance(s): %s", split, count, reason)
        if not keep:
            raise ValueError(
                f"split {split!r} of {self.path} has no usable utterances ({dict(dropped)})"
            )
        return ds.select(keep), durations

    def _dataset(self, stage: str) -> SpeechDataset:
        if stage not in self.datasets:
            split = self.splits[stage]
            ds, durations = self._filter(self._load(split), split)
            self.datasets[stage] = SpeechDataset(
                ds, self.tokenizer, self.frontend, self.audio_column, self.text_column, durations
            )
            log.info(
                "%s split %r: %d utterances, %.1f min", stage, split, len(ds), sum(durations) / 60
            )
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

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self._dataset(stage),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)
