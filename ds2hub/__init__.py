"""ds2hub: Deep Speech 2 for PyTorch Lightning.

audio -> features -> DeepSpeech2 -> logits -> decoder -> text
"""

from ds2hub.audio import load_audio
from ds2hub.data import SpeechDataModule
from ds2hub.features import FeatureConfig, LogSpectrogram
from ds2hub.hub import SpeechRecognizer, from_pretrained
from ds2hub.model import DeepSpeech2, DeepSpeech2Config, available_presets, get_preset
from ds2hub.task import DeepSpeech2Task
from ds2hub.tokenizers import (
    BigramTokenizer,
    CharTokenizer,
    MandarinTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    available_tokenizers,
    load_tokenizer,
)

__version__ = "0.1.0"

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
    "available_presets",
    "available_tokenizers",
    "from_pretrained",
    "get_preset",
    "load_audio",
    "load_tokenizer",
]
