"""Training-time augmentation: additive noise, speed and tempo perturbation, end trimming,
vocal tract length perturbation, random equalisation, SpecAugment.

Deep Speech 2 (section 5.2) adds noise to 40 % of utterances at random SNRs; speed perturbation
(Ko et al., 2015) and SpecAugment (Park et al., 2019) are the later standard companions. Vocal
tract length perturbation (VTLP, Jaitly & Hinton, 2013) stretches the spectrum alone, as if
another speaker said the same words at the same speed. Tempo perturbation changes the speaking
rate alone (a phase vocoder keeps the pitch and the formants), so speakers who talk faster or
slower than the training speakers are covered without also turning every fast utterance into a
child's voice, as speed perturbation does. Each is off by default and
switched on from the recipe (`data.augment`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchaudio.functional as AF
from torchaudio.transforms import FrequencyMasking, TimeMasking

from ds2hub.audio import SAMPLE_RATE, AudioDecodeError, load_audio


@dataclass(frozen=True)
class AugmentConfig:
    """What to augment, and how strongly. All probabilities are per utterance."""

    noise_prob: float = 0.0  # share of utterances that get noise (paper: 0.4)
    noise_snr_db: tuple[float, float] = (0.0, 30.0)  # SNR drawn uniformly from this range
    noise_dir: str | None = (
        None  # recordings to mix in (any format); None: synthetic coloured noise
    )
    speed_prob: float = 0.0  # share of utterances played faster or slower
    speed_factors: tuple[float, ...] = (0.9, 1.1)
    tempo_prob: float = 0.0  # share of utterances spoken faster or slower at the same pitch
    tempo_range: tuple[float, float] = (0.8, 1.25)  # rate drawn uniformly (>1: faster, shorter)
    freq_masks: int = 0  # SpecAugment frequency masks per utterance
    freq_mask_width: int = 27  # at most this many feature bins (features.n_bins: 161 by default)
    time_masks: int = 0  # SpecAugment time masks per utterance
    time_mask_width: int = 40  # at most this many 10 ms frames per mask
    time_mask_max_ratio: float = 0.1  # and at most this share of the utterance per mask
    narrowband_prob: float = 0.0  # share of utterances band-limited to 4 kHz (as if 8 kHz audio)
    # Corpora of isolated words are cut by hand or by a silence detector, some speakers' far
    # tighter than others' (FSDD's nicolas: the first or last 20 ms are within 10 dB of the
    # loudest frame in 41 % of his recordings, against 1-23 % for the others). Trimming a random
    # amount off each end teaches the model words whose onset or coda was cut.
    trim_prob: float = 0.0  # share of utterances with a random amount cut off each end
    trim_max_ms: float = 60.0  # at most this much per end ...
    trim_max_ratio: float = 0.15  # ... and at most this share of the utterance per end
    # The opposite: quiet noise of random length added before and after the word. A model trained
    # only on words cut tight reads the edges and the share of silence (which moves the
    # per-utterance normalisation) as cues, and fails on the same words with a pause around
    # them: 80 ms of noise 60 dB down on each side of FSDD's held-out speaker's words took a
    # checkpoint from 138 to 244 errors of 500, and a training speaker's from 13 to 48.
    # (Duration batching budgets with the corpus's durations, so padded batches run longer, as
    # slowed ones do.)
    pad_prob: float = 0.0  # share of utterances padded
    pad_max_ms: float = 250.0  # each end gets a length drawn uniformly from [0, pad_max_ms]
    pad_level_db: tuple[float, float] = (-70.0, -40.0)  # the noise's level re the word's peak
    # Vocal tract length perturbation (Jaitly & Hinton, 2013): the frequency axis is warped by a
    # factor drawn per utterance, as if a shorter (> 1) or longer (< 1) vocal tract said the same
    # words: formants and harmonics move up or down, the timing does not.
    vtlp_prob: float = 0.0  # share of utterances warped
    vtlp_range: tuple[float, float] = (0.9, 1.1)  # warp factor drawn uniformly (>1: higher)
    # Random equalisation: microphones, rooms and codecs colour the spectrum, and a model trained
    # on a few recording set-ups learns their colouring (`benchmarks/fsdd_speakers.py
    # --test-time` equalises a held-out speaker's words and counts the errors it adds). Each band
    # is a peaking filter (an RBJ biquad) at a log-uniform centre frequency with a uniform gain
    # and Q.
    eq_prob: float = 0.0  # share of utterances equalised
    eq_bands: int = 2  # peaking filters per equalised utterance
    eq_gain_db: float = 10.0  # each band's gain drawn uniformly from [-eq_gain_db, eq_gain_db]
    eq_freq_range_hz: tuple[float, float] = (100.0, 4000.0)  # centre frequencies (log-uniform)
    eq_q_range: tuple[float, float] = (0.7, 2.0)  # bandwidths (higher Q: narrower)

    def __post_init__(self) -> None:
        # Refused here, when the recipe is read, not in a loader worker halfway through training.
        for name in (
            "noise_prob",
            "speed_prob",
            "tempo_prob",
            "narrowband_prob",
            "trim_prob",
            "pad_prob",
            "vtlp_prob",
            "eq_prob",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment.{name} must be in [0, 1], not {getattr(self, name)}")
        for name in ("tempo_range", "vtlp_range", "eq_q_range", "eq_freq_range_hz"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ValueError(f"augment.{name} must be [low, high] with 0 < low <= high")
        if any(f <= 0 for f in self.speed_factors):
            raise ValueError("augment.speed_factors must all be positive")
        if self.eq_freq_range_hz[1] >= SAMPLE_RATE / 2:
            raise ValueError(f"augment.eq_freq_range_hz must stay below {SAMPLE_RATE // 2} Hz")
        if self.eq_bands < 0 or self.eq_gain_db < 0:
            raise ValueError("augment.eq_bands and augment.eq_gain_db must not be negative")
        if self.pad_max_ms < 0 or not self.pad_level_db[0] <= self.pad_level_db[1] <= 0:
            raise ValueError(
                "augment.pad_max_ms must not be negative and augment.pad_level_db must be "
                "[low, high] with low <= high <= 0"
            )

    @property
    def enabled(self) -> bool:
        return bool(
            self.noise_prob
            or self.speed_prob
            or self.tempo_prob
            or self.freq_masks
            or self.time_masks
            or self.narrowband_prob
            or self.trim_prob
            or (self.pad_prob and self.pad_max_ms)
            or self.vtlp_prob
            or (self.eq_prob and self.eq_bands)
        )


def coloured_noise(num_samples: int, exponent: float) -> torch.Tensor:
    """Noise with a 1/f^exponent power spectrum (0 white, 1 pink, 2 brown), unit variance."""
    spectrum = torch.fft.rfft(torch.randn(num_samples))
    freqs = torch.arange(1, spectrum.numel() + 1, dtype=torch.float32)
    noise = torch.fft.irfft(spectrum / freqs.pow(exponent / 2), n=num_samples)
    return noise / (noise.std() + 1e-8)


def trim_ends(wave: torch.Tensor, max_ms: float, max_ratio: float) -> torch.Tensor:
    """(T,) -> (T',): a random amount, up to `max_ms` and `max_ratio * T`, cut off each end."""
    most = min(int(max_ms * SAMPLE_RATE / 1000), int(max_ratio * wave.numel()))
    if most <= 0:
        return wave
    start, end = random.randint(0, most), random.randint(0, most)
    return wave[start : wave.numel() - end]


def pad_ends(wave: torch.Tensor, max_ms: float, level_db: tuple[float, float]) -> torch.Tensor:
    """(T,) -> (T',): quiet pink noise of a random length, up to `max_ms`, before and after
    `wave`, at a level drawn from `level_db` (dB re the peak of `wave`; silence stays silence)."""
    most = int(max_ms * SAMPLE_RATE / 1000)
    before, after = random.randint(0, most), random.randint(0, most)
    if before + after < 2 or not wave.numel():
        return wave  # (one sample of noise has no spread to scale by)
    peak = wave.abs().max()
    if not peak > 0:
        return wave
    noise = coloured_noise(before + after, 1.0)
    noise = noise * peak * 10 ** (random.uniform(*level_db) / 20) / (noise.abs().max() + 1e-8)
    return torch.cat([noise[:before], wave, noise[before:]])


# Phase-vocoder frames: 32 ms windows, a quarter hop, as in librosa's time_stretch at 16 kHz.
_TEMPO_N_FFT, _TEMPO_HOP = 512, 128


def change_tempo(wave: torch.Tensor, rate: float) -> torch.Tensor:
    """(T,) -> about (T / rate,): the same words at `rate` times the speed and the same pitch.

    torchaudio's phase vocoder stretches the STFT; the inverse STFT turns it back into audio (sox's
    `tempo` effect, which Kaldi recipes use, left torchaudio with its sox bindings).
    """
    if rate <= 0:
        raise ValueError(f"tempo rate must be positive, not {rate}")
    if rate == 1.0 or wave.numel() < _TEMPO_N_FFT:
        return wave
    window = torch.hann_window(_TEMPO_N_FFT)
    spec = torch.stft(wave, _TEMPO_N_FFT, _TEMPO_HOP, window=window, return_complex=True)
    advance = torch.linspace(0, torch.pi * _TEMPO_HOP, spec.shape[0])[:, None]
    stretched = AF.phase_vocoder(spec, rate, advance)
    length = int(round(wave.numel() / rate))
    return torch.istft(stretched, _TEMPO_N_FFT, _TEMPO_HOP, window=window, length=length)


def warp_frequency(
    spec: torch.Tensor,
    alpha: float,
    boundary: float = 0.85,
    frequencies: torch.Tensor | None = None,
) -> torch.Tensor:
    """(F, T) -> (F, T): VTLP's piecewise-linear warp of the frequency axis by `alpha`.

    Content at frequency f moves to f * alpha up to a boundary (`boundary` of the band, lowered
    for alpha > 1 so nothing is pushed off the top); above it a second straight segment maps the
    rest of the band onto what is left, so the top bin stays the top bin. Written here because
    torchaudio has no VTLP; each output bin linearly interpolates its two source bins.

    Args:
        frequencies: (F,) increasing centre frequency of each row (`FeatureConfig.
            bin_frequencies`); None: equally spaced bins from 0 Hz (a linear spectrogram). Mel
            rows need it, or the warp would scale mel, not hertz.
    """
    if alpha <= 0:
        raise ValueError(f"VTLP warp factor must be positive, not {alpha}")
    n = spec.shape[0]
    if alpha == 1.0 or n < 2:
        return spec
    if frequencies is None:
        freqs = torch.arange(n, dtype=torch.float32)
    else:
        freqs = frequencies.to(torch.float32)
        if freqs.shape != (n,):
            raise ValueError(f"{freqs.numel()} bin frequencies for {n} rows")
    top = float(freqs[-1])
    knee = boundary * top * min(alpha, 1.0) / alpha  # source frequency where segment one ends
    # Invert the warp: the source frequency that lands on each output bin.
    src = torch.where(
        freqs <= knee * alpha,
        freqs / alpha,
        knee + (freqs - knee * alpha) * (top - knee) / (top - knee * alpha),
    ).clamp(float(freqs[0]), top)
    low = (torch.searchsorted(freqs, src, right=True) - 1).clamp(0, n - 2)
    frac = ((src - freqs[low]) / (freqs[low + 1] - freqs[low])).clamp(0, 1)
    frac = frac.unsqueeze(1).to(spec.dtype)
    return spec[low] * (1 - frac) + spec[low + 1] * frac


def peaking_filter(centre_hz: float, gain_db: float, q: float) -> tuple[list[float], list[float]]:
    """The RBJ audio-EQ-cookbook peaking filter: biquad coefficients `(b, a)` (numerator first,
    as in the cookbook and scipy; `AF.lfilter` takes them the other way round).

    The formulas of torchaudio's `equalizer_biquad`, which cannot be used as is: it filters with
    `clamp=True`, clipping every sample past [-1, 1], and a boost (or a phase shift of a
    peak-normalised word) goes past that.
    """
    amplitude = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * centre_hz / SAMPLE_RATE
    alpha = math.sin(w0) / (2 * q)
    cos = -2 * math.cos(w0)
    b = [1 + alpha * amplitude, cos, 1 - alpha * amplitude]
    a = [1 + alpha / amplitude, cos, 1 - alpha / amplitude]
    return b, a


def equalize(wave: torch.Tensor, bands: Sequence[tuple[float, float, float]]) -> torch.Tensor:
    """(T,) -> (T,) through peaking filters in series, one per `(centre_hz, gain_db, q)`
    (`peaking_filter`); the result is rescaled if needed so its peak is not above the input's."""
    if not bands or wave.numel() == 0:
        return wave
    out = wave
    for centre, gain, q in bands:
        b, a = (
            torch.tensor(c, dtype=wave.dtype, device=wave.device)
            for c in peaking_filter(centre, gain, q)
        )
        out = AF.lfilter(out, a, b, clamp=False)
    peak, out_peak = float(wave.abs().max()), float(out.abs().max())
    return out * (peak / out_peak) if out_peak > peak > 0 else out


def random_bands(
    count: int, gain_db: float, freq_range_hz: tuple[float, float], q_range: tuple[float, float]
) -> list[tuple[float, float, float]]:
    """`count` random peaking bands for `equalize`: log-uniform centre frequencies in
    `freq_range_hz`, gains uniform in +-`gain_db`, Q uniform in `q_range`."""
    low, high = (math.log(f) for f in freq_range_hz)
    return [
        (
            math.exp(random.uniform(low, high)),
            random.uniform(-gain_db, gain_db),
            random.uniform(*q_range),
        )
        for _ in range(count)
    ]


class Augmenter:
    """Applies an `AugmentConfig` to waveforms (before features) and spectrograms (after)."""

    def __init__(self, config: AugmentConfig, frequencies: torch.Tensor | None = None) -> None:
        """
        Args:
            frequencies: the features' bin centre frequencies (`FeatureConfig.bin_frequencies`),
                which VTLP warps; None: equally spaced bins (a linear spectrogram).
        """
        self.config = config
        self.frequencies = frequencies
        self.noise_files = []
        if config.noise_dir:
            self.noise_files = sorted(p for p in Path(config.noise_dir).rglob("*") if p.is_file())
            if not self.noise_files:
                raise FileNotFoundError(f"no noise recordings in {config.noise_dir}")
        self.freq_mask = FrequencyMasking(config.freq_mask_width) if config.freq_masks else None
        self.time_mask = (
            TimeMasking(config.time_mask_width, p=config.time_mask_max_ratio)
            if config.time_masks
            else None
        )

    def _noise(self, num_samples: int) -> torch.Tensor:
        if self.noise_files:
            try:
                noise = load_audio(random.choice(self.noise_files))
            except AudioDecodeError:
                noise = coloured_noise(num_samples, 1.0)
            if noise.numel() < num_samples:
                noise = noise.repeat(num_samples // max(noise.numel(), 1) + 1)
            start = random.randint(0, noise.numel() - num_samples)
            return noise[start : start + num_samples]
        return coloured_noise(num_samples, random.choice([0.0, 1.0, 2.0]))

    def waveform(self, wave: torch.Tensor) -> torch.Tensor:
        """(T,) at 16 kHz -> augmented (T',) (speed changes the length)."""
        c = self.config
        if c.narrowband_prob and random.random() < c.narrowband_prob:
            # Telephone/8 kHz corpora have nothing above 4 kHz; wideband training speech taught
            # through the same band keeps the model from relying on what they lack.
            wave = AF.resample(AF.resample(wave, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)
        if c.trim_prob and random.random() < c.trim_prob:
            wave = trim_ends(wave, c.trim_max_ms, c.trim_max_ratio)
        if c.pad_prob and random.random() < c.pad_prob:
            wave = pad_ends(wave, c.pad_max_ms, c.pad_level_db)
        if c.speed_prob and random.random() < c.speed_prob:
            wave, _ = AF.speed(wave, SAMPLE_RATE, random.choice(c.speed_factors))
        if c.tempo_prob and random.random() < c.tempo_prob:
            wave = change_tempo(wave, random.uniform(*c.tempo_range))
        if c.eq_prob and c.eq_bands and random.random() < c.eq_prob:
            bands = random_bands(c.eq_bands, c.eq_gain_db, c.eq_freq_range_hz, c.eq_q_range)
            wave = equalize(wave, bands)
        if c.noise_prob and random.random() < c.noise_prob and wave.abs().max() > 0:
            snr = torch.tensor([random.uniform(*c.noise_snr_db)])
            wave = AF.add_noise(wave[None], self._noise(wave.numel())[None], snr)[0]
        return wave

    def spectrogram(self, spec: torch.Tensor) -> torch.Tensor:
        """(F, T) normalised features -> warped (VTLP) and masked features (masks are set to the
        utterance's mean: zero for the per-utterance mean-normalised front ends, below zero for
        `peak`, whose zero is 30 dB under the loudest bin, brighter than most of a word; for
        `global`, the utterance's own mean rather than the training data's zero)."""
        c = self.config
        if c.vtlp_prob and random.random() < c.vtlp_prob:
            spec = warp_frequency(spec, random.uniform(*c.vtlp_range), frequencies=self.frequencies)
        if c.freq_masks or c.time_masks:
            mean = float(spec.mean())
            for _ in range(c.freq_masks):
                spec = self.freq_mask(spec, mean)
            for _ in range(c.time_masks):
                spec = self.time_mask(spec, mean)
        return spec
