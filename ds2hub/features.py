"""The paper's front end: log power spectrogram of 20 ms windows every 10 ms (161 bins at 16 kHz),
normalised per utterance (bidirectional models) or with fixed statistics of the training data
(`normalization: global`, the causal front end forward-only models need to stream). `n_mels`
pools the bins into a log-mel filterbank instead."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ds2hub.audio import SAMPLE_RATE
from ds2hub.errors import ConfigError

_DB_TO_LOG = math.log(10) / 10  # natural-log units per decibel of power
_MIN_POWER = 1e-30  # log power is taken of at least this (digital silence stays finite)
_SILENCE = math.log(_MIN_POWER) + 1e-3  # a log power at or below this is digital silence
NORMALIZATIONS = ("utterance", "peak", "global")
MAX_WINDOW_MS = 1000.0  # the longest analysis window (the paper's: 20 ms)
MAX_MELS = 4096


@dataclass(frozen=True)
class FeatureConfig:
    """Front-end settings, stored with every model so inference computes identical features."""

    sample_rate: int = SAMPLE_RATE
    window_ms: float = 20.0  # analysis window (paper: 20 ms)
    hop_ms: float = 10.0  # stride between frames (paper: 10 ms)
    dynamic_range_db: float = 60.0  # utterance, peak: log power floored this far below the peak
    # "utterance": normalised and floored with the utterance's own statistics (looks ahead).
    # "peak": log power relative to the utterance's loudest bin, floor -1, peak +1 (silence -1):
    # a quieter pause added around a word leaves its frames as they were; its zero, 30 dB down, is
    # what conv and batch padding put around every utterance.
    # "global": causal, an absolute floor and per-bin training statistics stored with the model
    # (`LogSpectrogram.mean`/`std`), so chunked (streaming) recognition reproduces it exactly.
    normalization: str = "utterance"
    floor_db: float = -80.0  # global: log power floored at this level (dB re 1; below 16-bit noise)
    # Keep only the bins up to this frequency (None: all). For 8 kHz corpora, 4000 drops the
    # resampling residue that wideband extra corpora would teach the model to rely on.
    max_frequency_hz: float | None = None
    # None: the paper's linear bins. A number: that many triangular HTK mel filters (unnormalised,
    # `mel_filterbank`) from 0 Hz to `top_frequency_hz`, summed in power before the log (formants
    # stay, much of the pitch goes). Every filter must cover at least one FFT bin.
    n_mels: int | None = None

    def __post_init__(self) -> None:
        # Sizes bounded first: a hostile config.json must not make the checks below allocate.
        if not 0 < self.window_ms <= MAX_WINDOW_MS:
            raise ConfigError(
                f"features.window_ms must be in (0, {MAX_WINDOW_MS:g}], not {self.window_ms}"
            )
        if self.n_mels is not None and self.n_mels > MAX_MELS:
            raise ConfigError(f"features.n_mels must be at most {MAX_MELS}, not {self.n_mels}")
        if self.sample_rate != SAMPLE_RATE:
            raise ConfigError(
                f"features.sample_rate must be {SAMPLE_RATE}: ds2hub decodes and resamples all "
                f"audio to {SAMPLE_RATE} Hz, not {self.sample_rate}"
            )
        if self.n_fft < 2 or self.hop_length < 1 or self.hop_length > self.n_fft:
            raise ConfigError(
                f"features: window_ms {self.window_ms} and hop_ms {self.hop_ms} give a window of "
                f"{self.n_fft} samples every {self.hop_length}; the window needs at least 2 "
                "samples and the hop 1 to the window's length"
            )
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"features.normalization must be one of {NORMALIZATIONS}, "
                f"not {self.normalization!r}"
            )
        if self.max_frequency_hz is not None and not (
            0 < self.max_frequency_hz <= self.sample_rate / 2
        ):
            raise ConfigError(
                f"features.max_frequency_hz must be in (0, {self.sample_rate / 2:g}], "
                f"not {self.max_frequency_hz}"
            )
        if self.n_mels is not None:
            if self.n_mels < 1:
                raise ConfigError(f"features.n_mels must be positive, not {self.n_mels}")
            # A filter narrower than the FFT's bin spacing can fall between two bins and read
            # nothing: refuse it when the recipe is read.
            edges, bins = self._mel_points(), self._fft_frequencies()
            inside = (bins[None] > edges[:-2, None]) & (bins[None] < edges[2:, None])
            if not inside.any(dim=1).all():
                raise ConfigError(
                    f"features.n_mels: {self.n_mels} filters up to {self.top_frequency_hz:g} Hz "
                    f"leave some filter without an FFT bin ({self.sample_rate / self.n_fft:g} Hz "
                    "apart); use fewer filters or longer windows"
                )
        if self.dynamic_range_db <= 0:
            raise ConfigError(
                f"features.dynamic_range_db must be positive, not {self.dynamic_range_db}"
            )

    @property
    def causal(self) -> bool:
        """Whether a frame's features depend on past audio only (streaming is then exact)."""
        return self.normalization == "global"  # (the utterance floor looks ahead too)

    @property
    def global_stats(self) -> bool:
        """Whether the front end normalises with stored statistics."""
        return self.normalization == "global"

    @property
    def n_fft(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def top_frequency_hz(self) -> float:
        """The highest frequency the features cover."""
        return self.sample_rate / 2 if self.max_frequency_hz is None else self.max_frequency_hz

    @property
    def n_bins(self) -> int:
        """Number of features per frame: FFT bins (161 for 20 ms at 16 kHz; 81 up to 4 kHz) or
        `n_mels`."""
        if self.n_mels is not None:
            return self.n_mels
        bins = self.n_fft // 2 + 1
        return min(bins, int(self.top_frequency_hz * self.n_fft / self.sample_rate) + 1)

    def _fft_frequencies(self) -> torch.Tensor:
        """The frequency of every FFT bin in Hz, 0 to sample_rate / 2 (float64)."""
        bins = torch.arange(self.n_fft // 2 + 1, dtype=torch.float64)
        return bins * self.sample_rate / self.n_fft

    def _mel_points(self) -> torch.Tensor:
        """The mel filters' n_mels + 2 edge and centre frequencies in Hz (HTK scale, from 0 Hz),
        as `mel_filterbank` places them (in float64 here)."""
        mel = 2595.0 * math.log10(1.0 + self.top_frequency_hz / 700.0)
        points = torch.linspace(0.0, mel, self.n_mels + 2, dtype=torch.float64)
        return 700.0 * (10.0 ** (points / 2595.0) - 1.0)

    @property
    def bin_frequencies(self) -> torch.Tensor:
        """(n_bins,) centre frequency of each feature in Hz (FFT bins or mel filters)."""
        if self.n_mels is None:
            return self._fft_frequencies()[: self.n_bins].float()
        return self._mel_points()[1:-1].float()

    def to_dict(self) -> dict:
        """The settings as stored with a model (`FeatureConfig(**settings)` reads them back)."""
        return asdict(self)


def mel_filterbank(config: FeatureConfig) -> torch.Tensor:
    """(FFT bins, n_mels) triangular filters on the HTK mel scale from 0 Hz to
    `top_frequency_hz`, each peaking at 1 (not area-normalised).

    The float32 arithmetic of `torchaudio.functional.melscale_fbanks(..., mel_scale="htk")`, so
    models trained on its filters keep their inputs (tests/test_audio_features.py).
    """
    if config.n_mels is None:
        raise ValueError("mel_filterbank needs features.n_mels")
    n_freqs = config.n_fft // 2 + 1
    bins = torch.linspace(0, config.sample_rate // 2, n_freqs)
    top_mel = 2595.0 * math.log10(1.0 + config.top_frequency_hz / 700.0)
    mels = torch.linspace(0.0, top_mel, config.n_mels + 2)
    edges = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    widths = edges[1:] - edges[:-1]
    slopes = edges.unsqueeze(0) - bins.unsqueeze(1)  # (n_freqs, n_mels + 2)
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    return torch.clamp_min(torch.minimum(rising, falling), 0.0)


def power_spectrogram(
    waveform: torch.Tensor, config: FeatureConfig, window: torch.Tensor
) -> torch.Tensor:
    """(..., T) -> (..., n_fft // 2 + 1, 1 + T // hop) power |STFT|^2 of centred Hamming windows,
    the signal reflected at both ends (`reflectable`)."""
    spec = torch.stft(
        reflectable(waveform, config),
        config.n_fft,
        config.hop_length,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return spec.abs().pow(2)


def reflectable(waveform: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """(..., T) zero-padded at the end to at least n_fft // 2 + 1 samples, the least a reflection
    by half a window can take: an utterance of a few milliseconds gives a frame, not an error."""
    short = config.n_fft // 2 + 1 - waveform.size(-1)
    return nn.functional.pad(waveform, (0, short)) if short > 0 else waveform


def check_network_input(n_features: int, features: FeatureConfig) -> None:
    """Raises `ConfigError` when a network built for `n_features` inputs per frame cannot take
    `features` (checked when a model is built, not as a shape error at the first batch)."""
    if n_features != features.n_bins:
        raise ConfigError(
            f"arch.n_features={n_features} but the features have {features.n_bins} bins"
        )


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


def frame_statistics(spectra: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-bin mean and standard deviation over every frame of `spectra`.

    Args:
        spectra: (F, T) log spectrograms (unnormalised).
    Returns:
        mean (F,), std (F,) and the number of frames. A bin's std is floored at a tenth of the
        average std, so a band that was (nearly) silent in training is not blown up when audio
        has energy there.
    """
    total = sq = 0.0
    count = 0
    for spec in spectra:
        spec = spec.to(torch.float64)
        total, sq = total + spec.sum(dim=1), sq + spec.pow(2).sum(dim=1)
        count += spec.size(1)
    if not count:
        raise ValueError("no frames to estimate feature statistics from")
    mean = total / count
    std = (sq / count - mean.pow(2)).clamp_min(0).sqrt()
    std = std.clamp_min(0.1 * float(std.mean()) + 1e-8)
    return mean.float(), std.float(), count


class LogSpectrogram(nn.Module):
    """Waveform (T,) at 16 kHz -> log power spectrogram (F, frames) with F = 161 by default.

    Frames are `1 + T // hop` (centred windows), so the frame count depends on the utterance alone.
    With `normalization: global` the state dict (so checkpoints and hub folders) holds `mean`,
    `std` (F,) and `count`, the number of training frames they came from (0: not estimated yet;
    the features then pass unnormalised).
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        super().__init__()
        self.config = config or FeatureConfig()
        # The window and filters are derived from the config, not learned: kept out of state dicts.
        self.window: torch.Tensor
        self.register_buffer("window", torch.hamming_window(self.config.n_fft), persistent=False)
        # (FFT bins, n_mels)
        fbanks = mel_filterbank(self.config) if self.config.n_mels is not None else None
        self.mel_fbanks: torch.Tensor | None
        self.register_buffer("mel_fbanks", fbanks, persistent=False)
        if self.config.global_stats:
            n = self.config.n_bins
            self.register_buffer("mean", torch.zeros(n))
            self.register_buffer("std", torch.ones(n))
            self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @property
    def has_statistics(self) -> bool:
        """Whether global statistics were estimated (always True for other front ends)."""
        return not self.config.global_stats or int(self.count) > 0

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor, count: int) -> None:
        """Stores per-bin statistics (see `frame_statistics`) for `normalization: global`."""
        if not self.config.global_stats:
            raise ValueError("only a front end with normalization: global stores statistics")
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.count.fill_(int(count))

    def log_power(self, power: torch.Tensor) -> torch.Tensor:
        """Power spectrum (..., F, T) -> floored natural log, before normalisation (only the
        first `n_bins` bins: up to `max_frequency_hz`; or the `n_mels` filters' outputs)."""
        if self.mel_fbanks is None:
            power = power[..., : self.config.n_bins, :]
        else:
            power = torch.matmul(power.transpose(-1, -2), self.mel_fbanks).transpose(-1, -2)
        # A true log: log(1 + |X|^2) is nearly linear at the quiet levels of real recordings.
        spec = torch.log(power.clamp_min(_MIN_POWER))
        if self.config.causal:
            # Causal: an absolute floor (digital silence stays finite, nothing looks ahead).
            return spec.clamp_min(self.config.floor_db * _DB_TO_LOG)
        # Floored relative to the loudest bin, not absolutely, so the gain does not matter and
        # digital silence stays finite.
        floor = spec.amax(dim=(-2, -1), keepdim=True) - self.config.dynamic_range_db * _DB_TO_LOG
        return torch.maximum(spec, floor)

    def normalize(self, spec: torch.Tensor) -> torch.Tensor:
        """Floored log spectrum (F, T) -> the model's input features."""
        if self.config.global_stats:
            if not self.has_statistics:
                return spec
            return (spec - self.mean[:, None]) / self.std[:, None]
        if self.config.normalization == "peak":  # (the floor is already peak - dynamic range)
            peak = spec.amax()
            if peak <= _SILENCE:  # digital silence: all floor, not all peak
                return torch.full_like(spec, -1.0)
            half_range = self.config.dynamic_range_db * _DB_TO_LOG / 2
            return (spec - peak) / half_range + 1
        return normalize_utterance(spec)

    def unnormalized(self, waveform: torch.Tensor) -> torch.Tensor:
        """(T,) -> floored log power (F, frames), the input of `frame_statistics`."""
        return self.log_power(self.power(waveform))

    def power(self, waveform: torch.Tensor) -> torch.Tensor:
        """(..., T) -> (..., FFT bins, frames) power spectrum of centred windows."""
        return power_spectrogram(waveform, self.config, self.window)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """(T,) -> (F, frames); utterance normalisation: features do not change with the gain."""
        return self.normalize(self.unnormalized(waveform))

    def frames(self, padded: torch.Tensor) -> torch.Tensor:
        """Features of the windows of an already padded signal (no centring): (L,) -> (F, n)
        with n = 1 + (L - n_fft) // hop. What a stream computes chunk by chunk; needs a causal
        front end (see `FeatureConfig.causal`)."""
        if not self.config.causal:
            raise ValueError(
                "this front end normalises every utterance with its own statistics, which look "
                "ahead; frame-by-frame features need normalization: global"
            )
        spec = torch.stft(
            padded,
            self.config.n_fft,
            self.config.hop_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        return self.normalize(self.log_power(spec.abs().pow(2)))

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.config.hop_length

    # --- batches on the training device (SpeechDataModule's `frontend_on_device`) ----------------
    def reflect_pad(self, waveform: torch.Tensor) -> torch.Tensor:
        """(T,) -> (T + 2 * (n_fft // 2),): the signal reflected at both ends as the centred STFT
        pads it, so `batch` over zero-padded batches of these gives `forward`'s features."""
        pad = self.config.n_fft // 2
        waveform = reflectable(waveform, self.config)
        return nn.functional.pad(waveform[None, None], (pad, pad), mode="reflect")[0, 0]

    def batch(
        self, samples: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of a batch at once, on the batch's device: (B, L) `reflect_pad`ded utterances,
        zero-padded after each, and (B,) their padded lengths -> (B, F, T) features, zero on the
        padded frames, and (B,) frames. Each utterance's features equal `forward`'s of it
        (floors and statistics come from its own frames only)."""
        cfg = self.config
        frames = 1 + (lengths - cfg.n_fft) // cfg.hop_length
        spec = torch.stft(
            samples,
            cfg.n_fft,
            cfg.hop_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        power = spec.abs().pow(2)
        if self.mel_fbanks is None:
            power = power[:, : cfg.n_bins]
        else:
            power = torch.matmul(power.transpose(-1, -2), self.mel_fbanks).transpose(-1, -2)
        valid = (torch.arange(power.size(-1), device=power.device) < frames[:, None])[:, None]
        spec = torch.log(power.clamp_min(_MIN_POWER))
        if cfg.causal:
            spec = spec.clamp_min(cfg.floor_db * _DB_TO_LOG)
            if self.has_statistics:
                spec = (spec - self.mean[:, None]) / self.std[:, None]
            return spec.masked_fill(~valid, 0.0), frames
        peak = spec.masked_fill(~valid, -math.inf).amax(dim=(1, 2), keepdim=True)
        spec = torch.maximum(spec, peak - cfg.dynamic_range_db * _DB_TO_LOG)
        if cfg.normalization == "peak":
            half_range = cfg.dynamic_range_db * _DB_TO_LOG / 2
            spec = torch.where(peak <= _SILENCE, -1.0, (spec - peak) / half_range + 1)
            return spec.masked_fill(~valid, 0.0), frames
        # utterance: per-bin means over the utterance's frames, one (unbiased) std over all of them
        count = frames[:, None, None].to(spec.dtype)
        centred = spec - spec.masked_fill(~valid, 0.0).sum(dim=-1, keepdim=True) / count
        centred = centred.masked_fill(~valid, 0.0)
        elements = count * spec.size(1)
        std = (centred.pow(2).sum(dim=(1, 2), keepdim=True) / (elements - 1).clamp_min(1)).sqrt()
        return torch.where(elements > 1, centred / (std + 1e-5), centred), frames
