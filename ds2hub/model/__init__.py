"""The Deep Speech 2 network, its configuration and named presets."""

from ds2hub.model.config import DeepSpeech2Config
from ds2hub.model.deepspeech2 import DeepSpeech2
from ds2hub.model.presets import PRESETS, available_presets, get_preset

__all__ = ["PRESETS", "DeepSpeech2", "DeepSpeech2Config", "available_presets", "get_preset"]
