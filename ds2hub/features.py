"""The paper's front end: log power spectrogram of 20 ms windows every 10 ms (161 bins at 16 kHz),
normalised per utterance."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchaudio.transforms import Spectrogram

from ds2hub.audio import SAMPLE_RATE


@dataclass(frozen=True)
class FeatureConfig:
    """Front-end settings, stored with every model so inference computes identical features."""

    sample_rate: int = SAMPLE_RATE
    window_ms: float = 20.0  # analysis window (paper: 20 ms)
    hop_ms: float = 10.0  # stride between frames (paper: 10 ms)
    normalize: bool = True  # zero mean, unit variance per utterance and frequency bin

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
    """Per-utterance mean/variance normalisation of each frequency bin.

    Args:
        spec: (F, T) features of one utterance (no padding).
    """
    mean = spec.mean(dim=-1, keepdim=True)
    std = spec.std(dim=-1, keepdim=True) if spec.size(-1) > 1 else torch.ones_like(mean)
    return (spec - mean) / (std + eps)


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
        spec = torch.log1p(self.spectrogram(waveform))  # log(1 + |X|^2) keeps silence finite
        return normalize_utterance(spec) if self.config.normalize else spec

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.config.hop_length
