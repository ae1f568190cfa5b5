"""Training-time augmentation: the `Transform`s of a recipe's `data.augment` (see the training
guide), applied in the list's order; a transform of your own is a `Transform` subclass too.

Waveform transforms change the 16 kHz audio before the front end, feature transforms the
normalised (F, T) features after it, so every waveform transform comes first in the list. The
maths are plain functions (`coloured_noise`, `change_tempo`, `warp_frequency`, `equalize`); the
classes draw their parameters from the `Rng` they are given and call them.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.signal import lfilter

from ds2hub.audio import SAMPLE_RATE, AudioDecodeError, load_audio, resample
from ds2hub.errors import ConfigError
from ds2hub.features import FeatureConfig


@dataclass
class Rng:
    """The generators a transform draws from: `py` for numbers (whether to apply, which factor,
    which SNR), `torch` for tensors (noise, masks). The same seed gives the same samples."""

    py: random.Random
    torch: torch.Generator

    @classmethod
    def seeded(cls, seed: int) -> Rng:
        return cls(random.Random(seed), torch.Generator().manual_seed(seed))


class Transform:
    """One augmentation step, applied to a share `prob` of the utterances.

    Subclasses set `stage` and implement `apply(x, rng)`: (T,) 16 kHz audio -> (T',) at
    `"waveform"`, normalised (F, T) features -> (F, T) at `"features"`. Whether an utterance is
    transformed is the first draw from `rng.py` (at `prob` 1 too; none at 0); `apply` then draws
    from `rng` only, never the global generators, so a seeded `Rng` reproduces the samples.
    """

    stage: ClassVar[str] = "waveform"

    def __init__(self, prob: float = 1.0) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"{type(self).__name__}: prob must be in [0, 1], not {prob}")
        self.prob = prob

    def setup(self, features: FeatureConfig) -> None:
        """Called once with the recipe's front end before the first utterance."""

    def __call__(self, x: torch.Tensor, rng: Rng) -> torch.Tensor:
        if self.prob > 0 and rng.py.random() < self.prob:
            return self.apply(x, rng)
        return x

    def apply(self, x: torch.Tensor, rng: Rng) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        names = inspect.signature(type(self).__init__).parameters
        args = (f"{n}={getattr(self, n)!r}" for n in names if n != "self" and hasattr(self, n))
        return f"{type(self).__name__}({', '.join(args)})"


def _check_range(owner: Transform, name: str, value: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not 0.0 < low <= high:
        raise ValueError(f"{type(owner).__name__}: {name} must be [low, high], 0 < low <= high")
    return low, high


# --- the maths -------------------------------------------------------------------------------------
def coloured_noise(
    num_samples: int, exponent: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noise with a 1/f^exponent power spectrum (0 white, 1 pink, 2 brown), unit variance."""
    spectrum = torch.fft.rfft(torch.randn(num_samples, generator=generator))
    freqs = torch.arange(1, spectrum.numel() + 1, dtype=torch.float32)
    noise = torch.fft.irfft(spectrum / freqs.pow(exponent / 2), n=num_samples)
    return noise / (noise.std() + 1e-8)


# Phase-vocoder frames: 32 ms windows, a quarter hop, as in librosa's time_stretch at 16 kHz.
_TEMPO_N_FFT, _TEMPO_HOP = 512, 128


def phase_vocoder(spec: torch.Tensor, rate: float, phase_advance: torch.Tensor) -> torch.Tensor:
    """(F, T) complex STFT -> (F, ceil(T / rate)): frames read every `rate` frames, magnitudes
    interpolated between neighbours, phases advanced by each bin's expected advance per hop
    (`phase_advance`, (F, 1)) plus the wrapped deviation measured between the neighbours
    (Laroche & Dolson, 1999), as librosa's `phase_vocoder` does.
    """
    steps = torch.arange(0, spec.shape[-1], rate, dtype=spec.real.dtype)
    alphas = steps % 1.0
    first_phase = spec[..., :1].angle()
    padded = torch.nn.functional.pad(spec, [0, 2])
    left = padded.index_select(-1, steps.long())
    right = padded.index_select(-1, (steps + 1).long())
    deviation = right.angle() - left.angle() - phase_advance
    deviation = deviation - 2 * math.pi * torch.round(deviation / (2 * math.pi))
    phase = torch.cat([first_phase, (deviation + phase_advance)[..., :-1]], dim=-1)
    magnitude = alphas * right.abs() + (1 - alphas) * left.abs()
    return torch.polar(magnitude, torch.cumsum(phase, -1))


def change_tempo(wave: torch.Tensor, rate: float) -> torch.Tensor:
    """(T,) -> about (T / rate,): the same words at `rate` times the speed and the same pitch,
    through a phase vocoder (`phase_vocoder`)."""
    if rate <= 0:
        raise ValueError(f"tempo rate must be positive, not {rate}")
    if rate == 1.0 or wave.numel() < _TEMPO_N_FFT:
        return wave
    window = torch.hann_window(_TEMPO_N_FFT)
    spec = torch.stft(wave, _TEMPO_N_FFT, _TEMPO_HOP, window=window, return_complex=True)
    advance = torch.linspace(0, torch.pi * _TEMPO_HOP, spec.shape[0])[:, None]
    stretched = phase_vocoder(spec, rate, advance)
    length = int(round(wave.numel() / rate))
    return torch.istft(stretched, _TEMPO_N_FFT, _TEMPO_HOP, window=window, length=length)


def warp_frequency(
    spec: torch.Tensor,
    alpha: float,
    boundary: float = 0.85,
    frequencies: torch.Tensor | None = None,
) -> torch.Tensor:
    """(F, T) -> (F, T): VTLP's piecewise-linear warp of the frequency axis by `alpha`.

    Content at frequency f moves to f * alpha up to `boundary` of the band (lowered for alpha > 1
    so nothing is pushed off the top); a second straight segment maps the rest onto what is left,
    so the top bin stays the top bin. Each output bin interpolates its two source bins.
    `frequencies`: the (F,) increasing centre frequency of each row
    (`FeatureConfig.bin_frequencies`), which mel rows need; None for a linear spectrogram.
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
    """The RBJ audio-EQ-cookbook peaking filter: biquad coefficients `(b, a)`, numerator first,
    as `scipy.signal.lfilter` takes them."""
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
    out = wave.detach().cpu().numpy().astype(np.float64)
    for centre, gain, q in bands:
        out = lfilter(*peaking_filter(centre, gain, q), out)
    filtered = torch.from_numpy(out.astype(np.float32))
    peak, out_peak = float(wave.abs().max()), float(filtered.abs().max())
    return filtered * (peak / out_peak) if out_peak > peak > 0 else filtered


def _with_length(wave: torch.Tensor, length: int) -> torch.Tensor:
    """(T,) cut or zero-padded at the end to `length` samples (a resampler's output may be a
    sample off the exact ratio)."""
    if wave.numel() >= length:
        return wave[:length]
    return torch.nn.functional.pad(wave, (0, length - wave.numel()))


# --- waveform transforms ---------------------------------------------------------------------------
class Narrowband(Transform):
    """Band-limits to 4 kHz, as if recorded at 8 kHz: wideband speech taught through the band of
    telephone and 8 kHz corpora keeps the model from relying on what they lack."""

    def apply(self, wave: torch.Tensor, rng: Rng) -> torch.Tensor:
        narrow = resample(resample(wave, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)
        return _with_length(narrow, wave.numel())


class TrimEnds(Transform):
    """Cuts a random amount, up to `max_ms` and `max_ratio` of the utterance, off each end: words
    of isolated-word corpora are cut more or less tightly, some of them into the onset or coda."""

    def __init__(self, prob: float = 1.0, max_ms: float = 60.0, max_ratio: float = 0.15) -> None:
        super().__init__(prob)
        if max_ms < 0 or not 0 <= max_ratio <= 0.5:
            raise ValueError("TrimEnds: max_ms must be >= 0 and max_ratio in [0, 0.5]")
        self.max_ms, self.max_ratio = max_ms, max_ratio

    def apply(self, wave: torch.Tensor, rng: Rng) -> torch.Tensor:
        most = min(int(self.max_ms * SAMPLE_RATE / 1000), int(self.max_ratio * wave.numel()))
        if most <= 0:
            return wave
        start, end = rng.py.randint(0, most), rng.py.randint(0, most)
        return wave[start : wave.numel() - end]


class PadEnds(Transform):
    """Puts quiet pink noise of a random length, up to `max_ms` per end, around the utterance, at a
    level drawn from `level_db` (dB re its peak; silence stays silence): a model that only met
    words cut tight fails on them with a pause around. (Batches run longer than their budget.)"""

    def __init__(
        self,
        prob: float = 1.0,
        max_ms: float = 250.0,
        level_db: tuple[float, float] = (-70.0, -40.0),
    ) -> None:
        super().__init__(prob)
        low, high = level_db
        if max_ms < 0 or not low <= high <= 0:
            raise ValueError("PadEnds: max_ms must be >= 0 and level_db low <= high <= 0")
        self.max_ms, self.level_db = max_ms, (float(low), float(high))

    def apply(self, wave: torch.Tensor, rng: Rng) -> torch.Tensor:
        most = int(self.max_ms * SAMPLE_RATE / 1000)
        before, after = rng.py.randint(0, most), rng.py.randint(0, most)
        if before + after < 2 or not wave.numel():
            return wave  # (one sample of noise has no spread to scale by)
        peak = wave.abs().max()
        if not peak > 0:
            return wave
        noise = coloured_noise(before + after, 1.0, rng.torch)
        level = 10 ** (rng.py.uniform(*self.level_db) / 20)
        noise = noise * peak * level / (noise.abs().max() + 1e-8)
        return torch.cat([noise[:before], wave, noise[before:]])


class Speed(Transform):
    """Plays the utterance faster or slower by a factor drawn from `factors` (Ko et al., 2015):
    rate, pitch and formants move together, and the length changes."""

    def __init__(self, prob: float = 1.0, factors: Sequence[float] = (0.9, 1.1)) -> None:
        super().__init__(prob)
        if not factors or any(f <= 0 for f in factors):
            raise ValueError("Speed: factors must be positive, and at least one")
        self.factors = tuple(float(f) for f in factors)

    def apply(self, wave: torch.Tensor, rng: Rng) -> torch.Tensor:
        # Resampled as if recorded at factor x the rate: factor times fewer samples.
        factor = rng.py.choice(self.factors)
        faster = resample(wave, SAMPLE_RATE * factor, SAMPLE_RATE)
        return _with_length(faster, math.ceil(wave.numel() / factor))


class Tempo(Transform):
    """Changes the speaking rate alone, by a factor drawn uniformly from `rate_range` (> 1: faster),
    at the same pitch (`change_tempo`): fast speakers without the child's voice `Speed` gives."""

    def __init__(self, prob: float = 1.0, rate_range: tuple[float, float] = (0.8, 1.25)) -> None:
        super().__init__(prob)
        self.rate_range = _check_range(self, "rate_range", rate_range)

    def apply(self, wave: torch.Tensor, rng: Rng) -> torch.Tensor:
        return change_tempo(wave, rng.py.uniform(*self.rate_range))


class Equalizer(Transform):
    """Colours the spectrum as microphones, rooms and codecs do: `bands` peaking filters
    (`equalize`) at log-uniform centre frequencies in `freq_range_hz`, gains uniform in +-`gain_db`
    and Q uniform in `q_range` (higher: narrower), so a model learns no set-up's colouring."""

    def __init__(
        self,
        prob: float = 1.0,
        bands: int = 2,
        gain_db: float = 10.0,
        freq_range_hz: tuple[float, float] = (100.0, 4000.0),
        q_range: tuple[float, float] = (0.7, 2.0),
    ) -> None:
        super().__init__(prob)
        if bands < 1 or gain_db < 0:
            raise ValueError("Equalizer: bands must be >= 1 and gain_db >= 0")
        self.bands, self.gain_db = bands, gain_db
        self.freq_range_hz = _check_range(self, "freq_range_hz", freq_range_hz)
        self.q_range = _check_range(self, "q_range", q_range)
        if self.freq_range_hz[1] >= SAMPLE_RATE / 2:
            raise ValueError(f"Equalizer: freq_range_hz must stay below {SAMPLE_RATE // 2} Hz")

    def draw_bands(self, rng: Rng) -> list[tuple[float, float, float]]:
        """`bands` random `(centre_hz, gain_db, q)` for `equalize`."""
        low, high = (math.log(f) for f in self.freq_range_hz)
        return [
            (
                math.exp(rng.py.uniform(low, high)),
                rng.py.uniform(-self.gain_db, self.gain_db),
                rng.py.uniform(*self.q_range),
            )
            for _ in range(self.bands)
        ]

    def apply(self, wave: torch.Tensor, rng: Rng) -> torch.Tensor:
        return equalize(wave, self.draw_bands(rng))


class Noise(Transform):
    """Adds noise at an SNR drawn uniformly from `snr_db` (Deep Speech 2: 40 % of utterances):
    a random stretch of a recording from `noise_dir` (any format, searched recursively), or,
    without one, white, pink or brown synthetic noise. Silent utterances stay silent."""

    def __init__(
        self,
        prob: float = 1.0,
        snr_db: tuple[float, float] = (0.0, 30.0),
        noise_dir: str | None = None,
    ) -> None:
        super().__init__(prob)
        low, high = snr_db
        if low > high:
            raise ValueError("Noise: snr_db must be [low, high] with low <= high")
        self.snr_db, self.noise_dir = (float(low), float(high)), noise_dir
        self.files: list[Path] = []
        if noise_dir:
            self.files = sorted(p for p in Path(noise_dir).rglob("*") if p.is_file())
            if not self.files:
                raise FileNotFoundError(f"no noise recordings in {noise_dir}")

    def noise(self, num_samples: int, rng: Rng) -> torch.Tensor:
        if not self.files:
            return coloured_noise(num_samples, rng.py.choice([0.0, 1.0, 2.0]), rng.torch)
        try:
            noise = load_audio(rng.py.choice(self.files))
        except AudioDecodeError:
            noise = coloured_noise(num_samples, 1.0, rng.torch)
        if noise.numel() < num_samples:
            noise = noise.repeat(num_samples // max(noise.numel(), 1) + 1)
        start = rng.py.randint(0, noise.numel() - num_samples)
        return noise[start : start + num_samples]

    def apply(self, wave: torch.Tensor, rng: Rng) -> torch.Tensor:
        if not wave.abs().max() > 0:
            return wave
        snr_db = rng.py.uniform(*self.snr_db)
        noise = self.noise(wave.numel(), rng)
        noise_power = noise.pow(2).sum()
        if not noise_power > 0:
            return wave
        # Scaled so that 10 log10(signal energy / noise energy) = snr_db.
        scale = (wave.pow(2).sum() / noise_power / 10 ** (snr_db / 10)).sqrt()
        return wave + scale * noise


# --- feature transforms ----------------------------------------------------------------------------
class VTLP(Transform):
    """Vocal tract length perturbation (Jaitly & Hinton, 2013): the frequency axis warped (in hertz,
    mel too) by a factor drawn uniformly from `warp_range` (`warp_frequency`), as if a shorter
    (> 1) or longer (< 1) vocal tract said the same words: formants move, the timing does not."""

    stage = "features"

    def __init__(self, prob: float = 1.0, warp_range: tuple[float, float] = (0.9, 1.1)) -> None:
        super().__init__(prob)
        self.warp_range = _check_range(self, "warp_range", warp_range)
        self.frequencies: torch.Tensor | None = None

    def setup(self, features: FeatureConfig) -> None:
        # Equally spaced FFT bins need no table of frequencies.
        self.frequencies = features.bin_frequencies if features.n_mels else None

    def apply(self, spec: torch.Tensor, rng: Rng) -> torch.Tensor:
        alpha = rng.py.uniform(*self.warp_range)
        return warp_frequency(spec, alpha, frequencies=self.frequencies)


class SpecAugment(Transform):
    """SpecAugment's masks (Park et al., 2019), on every utterance: `freq_masks` bands of up to
    `freq_mask_width` features, then `time_masks` stretches of up to `time_mask_width` frames
    and `time_mask_max_ratio` of the utterance each; a mask's width is uniform from 0. Masks hold
    the utterance's mean (not 0: under `peak` normalisation 0 is brighter than most of a word).
    """

    stage = "features"

    def __init__(
        self,
        freq_masks: int = 0,
        freq_mask_width: int = 27,
        time_masks: int = 0,
        time_mask_width: int = 40,
        time_mask_max_ratio: float = 0.1,
    ) -> None:
        super().__init__(1.0)
        if min(freq_masks, freq_mask_width, time_masks, time_mask_width) < 0:
            raise ValueError("SpecAugment: mask counts and widths must not be negative")
        if not 0.0 <= time_mask_max_ratio <= 1.0:
            raise ValueError("SpecAugment: time_mask_max_ratio must be in [0, 1]")
        self.freq_masks, self.freq_mask_width = freq_masks, freq_mask_width
        self.time_masks, self.time_mask_width = time_masks, time_mask_width
        self.time_mask_max_ratio = time_mask_max_ratio

    def __call__(self, spec: torch.Tensor, rng: Rng) -> torch.Tensor:
        return self.apply(spec, rng)  # no draw of its own: every utterance is masked

    def apply(self, spec: torch.Tensor, rng: Rng) -> torch.Tensor:
        masks = self.draw(spec.shape[0], spec.shape[1], rng)
        return apply_masks(spec, masks, float(spec.mean()))

    def draw(self, n_bins: int, n_frames: int, rng: Rng) -> list[Mask]:
        """The masks of one utterance of `n_bins` x `n_frames` features (its draws from
        `rng.torch`), for `apply_masks`."""
        masks = [
            _draw_mask(0, n_bins, self.freq_mask_width, rng.torch) for _ in range(self.freq_masks)
        ]
        width = self.time_mask_width
        if self.time_mask_max_ratio != 1.0:  # (SpecAugment's p = 1 leaves the width alone)
            width = min(width, int(n_frames * self.time_mask_max_ratio))
        masks += [_draw_mask(1, n_frames, width, rng.torch) for _ in range(self.time_masks)]
        return [m for m in masks if m is not None]


Mask = tuple[int, int, int]  # (axis: 0 features, 1 frames; first; end)


def _draw_mask(axis: int, size: int, width: int, generator: torch.Generator) -> Mask | None:
    """One mask along `axis` of a width uniform in [0, width) at a start uniform in what is left
    (two draws from `generator`); None when `width` < 1 (no draw)."""
    if width < 1:
        return None
    span = torch.rand(1, generator=generator) * width
    start = torch.rand(1, generator=generator) * (size - span)
    return axis, int(start.long()), int(start.long() + span.long())


def apply_masks(spec: torch.Tensor, masks: Sequence[Mask], value: float) -> torch.Tensor:
    """(F, T) with each mask's features or frames set to `value`."""
    if not masks:
        return spec
    spec = spec.clone()
    for axis, first, end in masks:
        if axis == 0:
            spec[first:end] = value
        else:
            spec[:, first:end] = value
    return spec


def apply_batch_masks(
    features: torch.Tensor, frames: torch.Tensor, masks: Sequence[Sequence[Mask]]
) -> torch.Tensor:
    """(B, F, T) zero-padded features with each utterance's `masks` applied within its `frames`,
    at its mean (as `SpecAugment` does to one utterance): the masks drawn in the loader workers,
    applied on the training device."""
    features = features.clone()
    for i, utterance in enumerate(masks):
        if utterance:
            n = int(frames[i])
            features[i, :, :n] = apply_masks(
                features[i, :, :n], utterance, float(features[i, :, :n].mean())
            )
    return features


# --- the pipeline ----------------------------------------------------------------------------------
def build_transforms(items: Sequence[Any] | None) -> list[Transform]:
    """Transforms from a recipe's `data.augment`: `Transform` objects (LightningCLI builds them),
    or plain `{class_path, init_args}` dicts (a run's saved config.yaml, read by `ds2hub push`)."""
    transforms = []
    for item in items or []:
        if isinstance(item, dict):
            if "class_path" not in item:
                raise ConfigError(f"data.augment: each entry needs a class_path, not {item!r}")
            module, _, name = str(item["class_path"]).rpartition(".")
            try:
                cls = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError, ValueError) as error:
                raise ConfigError(f"data.augment: no class {item['class_path']!r}") from error
            item = cls(**(item.get("init_args") or {}))
        if not isinstance(item, Transform):
            raise ConfigError(f"data.augment: {item!r} is not a Transform")
        transforms.append(item)
    return transforms


class Augmenter:
    """A recipe's transforms: the waveform ones before the front end (`waveform`), the feature
    ones after it (`features`). Without an explicit `rng`, each process draws from its own `Rng`,
    seeded from its torch seed (in a DataLoader worker, derived from the run's seed)."""

    def __init__(self, transforms: Sequence[Transform], features: FeatureConfig) -> None:
        self.transforms = list(transforms)
        stages = [t.stage for t in self.transforms]
        if unknown := set(stages) - {"waveform", "features"}:
            raise ConfigError(f"data.augment: unknown transform stage(s) {sorted(unknown)}")
        if "features" in stages and "waveform" in stages[stages.index("features") :]:
            raise ConfigError(
                "data.augment: waveform transforms run before the front end and feature "
                f"transforms after it, so list every waveform one first (got {stages})"
            )
        for transform in self.transforms:
            transform.setup(features)
        self.n_bins = features.n_bins
        self._rng: Rng | None = None
        self._pid = -1

    def rng(self) -> Rng:
        """This process's generators (a forked worker gets its own, not a copy of its parent's)."""
        if self._rng is None or self._pid != os.getpid():
            self._rng, self._pid = Rng.seeded(torch.initial_seed()), os.getpid()
        return self._rng

    def _run(self, stage: str, x: torch.Tensor, rng: Rng | None) -> torch.Tensor:
        rng = self.rng() if rng is None else rng
        for transform in self.transforms:
            if transform.stage == stage:
                x = transform(x, rng)
        return x

    def waveform(self, wave: torch.Tensor, rng: Rng | None = None) -> torch.Tensor:
        """(T,) at 16 kHz -> (T',) through the waveform transforms."""
        return self._run("waveform", wave, rng)

    def features(self, spec: torch.Tensor, rng: Rng | None = None) -> torch.Tensor:
        """(F, T) normalised features -> (F, T) through the feature transforms."""
        return self._run("features", spec, rng)

    def check_masks_only(self) -> None:
        """Raises `ConfigError` unless the feature transforms are at most one `SpecAugment`,
        whose masks `feature_masks` can draw without the features (a front end on the device)."""
        stage = [t for t in self.transforms if t.stage == "features"]
        if len(stage) > 1 or any(not isinstance(t, SpecAugment) for t in stage):
            names = ", ".join(type(t).__name__ for t in stage)
            raise ConfigError(
                "data.frontend_on_device computes the features on the training device, so the "
                f"only feature transform it takes is one SpecAugment (got {names})"
            )

    def feature_masks(self, n_frames: int, rng: Rng | None = None) -> list[Mask]:
        """The masks the feature transforms would apply to `n_frames` frames (see
        `check_masks_only`), drawn as `features` draws them."""
        rng = self.rng() if rng is None else rng
        masks: list[Mask] = []
        for transform in self.transforms:
            if isinstance(transform, SpecAugment):
                masks += transform.draw(self.n_bins, n_frames, rng)
        return masks
