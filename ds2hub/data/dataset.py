"""A torch Dataset over a Hugging Face `datasets` split: audio -> features, text -> token ids."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import torch
from torch.utils.data import Dataset

from ds2hub.audio import AudioDecodeError, load_audio
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
    ) -> None:
        self.data = hf_dataset
        self.tokenizer = tokenizer
        self.frontend = frontend
        self.audio_column = audio_column
        self.text_column = text_column
        self.durations = durations
        self.failures: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        row = self.data[int(index)]
        try:
            waveform = load_audio(audio_source(row[self.audio_column]))
        except AudioDecodeError as error:
            self.failures["undecodable"] += 1
            log.warning("skipping utterance %d: %s", index, error)
            return None
        with torch.no_grad():
            features = self.frontend(waveform)  # (F, T)
        text = row[self.text_column]
        return {
            "features": features,
            "tokens": torch.tensor(self.tokenizer.encode(text), dtype=torch.long),
            "text": text,
            "duration": waveform.numel() / self.frontend.config.sample_rate,
        }


def collate(items: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Pads a list of items into a batch (features zero-padded, so padding never leaks)."""
    items = [it for it in items if it is not None]
    if not items:
        raise AudioDecodeError("a whole batch failed to decode")
    n_feat = items[0]["features"].size(0)
    lengths = torch.tensor([it["features"].size(1) for it in items])
    target_lengths = torch.tensor([it["tokens"].numel() for it in items])
    features = torch.zeros(len(items), n_feat, int(lengths.max()))  # (B, F, T)
    targets = torch.zeros(len(items), max(int(target_lengths.max()), 1), dtype=torch.long)  # (B, S)
    for i, it in enumerate(items):
        features[i, :, : lengths[i]] = it["features"]
        targets[i, : target_lengths[i]] = it["tokens"]
    return {
        "features": features,
        "feature_lengths": lengths,
        "targets": targets,
        "target_lengths": target_lengths,
        "texts": [it["text"] for it in items],
        "durations": torch.tensor([it["duration"] for it in items]),
    }
