"""Data: Hugging Face `datasets` corpora -> filtered, featurised, padded CTC batches."""

from ds2hub.training.data.datamodule import SpeechDataModule, load_split
from ds2hub.training.data.dataset import SpeechDataset, collate

__all__ = ["SpeechDataModule", "SpeechDataset", "collate", "load_split"]
