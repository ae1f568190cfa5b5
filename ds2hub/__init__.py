"""ds2hub: Deep Speech 2 for PyTorch Lightning.

audio -> features -> DeepSpeech2 -> logits -> decoder -> text

The public names are imported on first use (PEP 562), so that `import ds2hub` and inference
(`ds2hub.from_pretrained(...).transcribe(...)`) load neither Lightning nor `datasets`; training
names (`DeepSpeech2Task`, `SpeechDataModule`) bring them in when asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "load_audio": "ds2hub.audio",
    "SpeechDataModule": "ds2hub.training.data",
    "FeatureConfig": "ds2hub.features",
    "LogSpectrogram": "ds2hub.features",
    "SpeechRecognizer": "ds2hub.inference.recognizer",
    "from_pretrained": "ds2hub.inference.recognizer",
    "available_models": "ds2hub.paths",
    "DeepSpeech2": "ds2hub.model",
    "DeepSpeech2Config": "ds2hub.model",
    "available_presets": "ds2hub.model",
    "get_preset": "ds2hub.model",
    "DeepSpeech2Task": "ds2hub.training.task",
    "BigramTokenizer": "ds2hub.tokenizers",
    "CharTokenizer": "ds2hub.tokenizers",
    "MandarinTokenizer": "ds2hub.tokenizers",
    "SentencePieceTokenizer": "ds2hub.tokenizers",
    "Tokenizer": "ds2hub.tokenizers",
    "available_tokenizers": "ds2hub.tokenizers",
    "load_tokenizer": "ds2hub.tokenizers",
}

__all__ = [
    "BigramTokenizer",
    "CharTokenizer",
    "DeepSpeech2",
    "DeepSpeech2Config",
    "DeepSpeech2Task",
    "FeatureConfig",
    "LogSpectrogram",
    "MandarinTokenizer",
    "SentencePieceTokenizer",
    "SpeechDataModule",
    "SpeechRecognizer",
    "Tokenizer",
    "available_models",
    "available_presets",
    "available_tokenizers",
    "from_pretrained",
    "get_preset",
    "load_audio",
    "load_tokenizer",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ds2hub' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from ds2hub.audio import load_audio
    from ds2hub.features import FeatureConfig, LogSpectrogram
    from ds2hub.inference.recognizer import SpeechRecognizer, from_pretrained
    from ds2hub.model import DeepSpeech2, DeepSpeech2Config, available_presets, get_preset
    from ds2hub.paths import available_models
    from ds2hub.tokenizers import (
        BigramTokenizer,
        CharTokenizer,
        MandarinTokenizer,
        SentencePieceTokenizer,
        Tokenizer,
        available_tokenizers,
        load_tokenizer,
    )
    from ds2hub.training.data import SpeechDataModule
    from ds2hub.training.task import DeepSpeech2Task
