"""The paper's front end: log power spectrogram of 20 ms windows every 10 ms (161 bins at 16 kHz),
normalised per utterance."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchaudio.transforms import Spectrogram

from ds2hub.audio import SAMPLE_RATE

_DB_TO_LOG = math.log(10) / 10  # natural-log units per decibel of power


@dataclass(frozen=True)
class FeatureConfig:
    """Front-end settings, stored with every model so inference computes identical features."""

    sample_rate: int = SAMPLE_RATE
    window_ms: float = 20.0  # analysis window (paper: 20 ms)
    hop_ms: float = 10.0  # stride between frames (paper: 10 ms)
    normalize: bool = True  # per utterance: zero mean per frequency bin, unit variance overall
    dynamic_range_db: float = 60.0  # log power is floored this far below the utterance's peak

    @property
    def n_fft(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def n_bins(self) -> int:
        """Number of frequency bins (161 for 20 ms at 16 kHz)."""
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict:
        return asdict(self)


def normalize_utterance(spec: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance normalisation: each frequency bin's mean is removed (cepstral mean
    normalisation: a fixed channel or gain is a constant offset in log power), then the whole
    utterance is scaled to unit variance. One scale for all bins, not one per bin: a band that is
    silent or nearly so (above 4 kHz in 8 kHz recordings) stays quiet instead of being amplified.

    Args:
        spec: (F, T) log features of one utterance (no padding).
    """
    centred = spec - spec.mean(dim=-1, keepdim=True)
    return centred / (centred.std() + eps) if centred.numel() > 1 else centred


class LogSpectrogram(nn.Module):
    """Waveform (T,) at 16 kHz -> log power spectrogram (F, frames) with F = 161 by default.

    Frames are `1 + T // hop` (centred windows), so the frame count depends on the utterance alone.
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        super().__init__()
        self.config = config or FeatureConfig()
        self.spectrogram = Spectrogram(
            n_fft=self.config.n_fft,
            hop_length=self.config.hop_length,
            window_fn=torch.hamming_window,
            power=2.0,
        )
        # The window is derived from the config, not learned: keep it out of state dicts.
        self.spectrogram.register_buffer(
            "window", self.spectrogram.window.clone(), persistent=False
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """(T,) -> (F, frames); the features do not change with the recording's gain."""
        # A true log: log(1 + |X|^2) is nearly linear at the quiet levels of real recordings.
        # Floored relative to the loudest bin, not absolutely, so the gain does not matter and
        # digital silence stays finite. Whisper keeps 80 dB of log-mel; 60 dB of linear bins
        # also puts the resampling residue above 4 kHz of 8 kHz recordings at the floor.
        spec = torch.log(self.spectrogram(waveform).clamp_min(1e-30))
        floor = spec.amax(dim=(-2, -1), keepdim=True) - self.config.dynamic_range_db * _DB_TO_LOG
        spec = torch.maximum(spec, floor)
        return normalize_utterance(spec) if self.config.normalize else spec

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.config.hop_length
