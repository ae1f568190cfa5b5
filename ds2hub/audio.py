"""Reading audio: any file or bytes soundfile (or torchcodec) can decode, as mono 16 kHz float32."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

SAMPLE_RATE = 16_000

AudioSource = str | Path | bytes | np.ndarray | torch.Tensor


class AudioDecodeError(ValueError):
    """Raised when bytes or a file cannot be decoded as audio."""


def _decode(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """Returns (samples (T, C) float32, sample rate). soundfile covers WAV/FLAC/Ogg Vorbis/Opus/MP3
    through libsndfile; torchcodec (FFmpeg) is the fallback for anything else (m4a, webm ...)."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return sf.read(handle, dtype="float32", always_2d=True)
    except Exception as sf_error:  # noqa: BLE001 - any libsndfile failure: try FFmpeg next
        try:
            from torchcodec.decoders import AudioDecoder

            samples = AudioDecoder(
                source if isinstance(source, bytes) else str(source)
            ).get_all_samples()
            return samples.data.T.numpy().astype(np.float32), int(samples.sample_rate)
        except Exception as codec_error:  # noqa: BLE001
            name = "<bytes>" if isinstance(source, bytes) else str(source)
            raise AudioDecodeError(
                f"cannot decode audio {name}: {sf_error}; {codec_error}"
            ) from None


def as_float_samples(samples: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Raw samples as float32 in [-1, 1]: integer PCM is scaled by its full scale (int16 by 32768),
    floats are kept.

    Raises:
        AudioDecodeError: for dtypes that are not audio samples (bool, complex, objects).
    """
    if isinstance(samples, np.ndarray):
        if samples.dtype == np.uint8:  # 8-bit WAV: unsigned, silence at 128
            return torch.from_numpy((samples.astype(np.float32) - 128.0) / 128.0)
        if samples.dtype.kind not in "iuf":
            raise AudioDecodeError(f"samples of dtype {samples.dtype} are not audio")
        if samples.dtype.kind in "iu":
            scale = float(np.iinfo(samples.dtype).max) + 1.0
            return torch.from_numpy(samples.astype(np.float32) / scale)
        return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    tensor = torch.as_tensor(samples)
    if tensor.dtype == torch.uint8:
        return (tensor.to(torch.float32) - 128.0) / 128.0
    if tensor.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        return tensor.to(torch.float32) / (float(torch.iinfo(tensor.dtype).max) + 1.0)
    if not tensor.is_floating_point():
        raise AudioDecodeError(f"samples of dtype {tensor.dtype} are not audio")
    return tensor.to(torch.float32)


def to_mono_16k(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(T,), (C, T) or (T, C) float audio at `sample_rate` Hz -> (T',) float32 mono at 16 kHz.

    Channels lie along the smaller dimension (recordings have far more samples than channels), so
    `soundfile.read`'s (T, C) and torch's usual (C, T) both work; they are averaged.
    """
    if waveform.dim() == 2:
        waveform = waveform.mean(dim=0 if waveform.size(0) <= waveform.size(1) else 1)
    elif waveform.dim() != 1:
        raise AudioDecodeError(
            f"audio must be (T,), (C, T) or (T, C); got shape {tuple(waveform.shape)}"
        )
    waveform = waveform.to(torch.float32)
    if sample_rate != SAMPLE_RATE:
        waveform = resample(waveform, sample_rate, SAMPLE_RATE)
    return waveform


def resample(waveform: torch.Tensor, from_rate: float, to_rate: float) -> torch.Tensor:
    """(T,) float audio at `from_rate` Hz -> about T * to_rate / from_rate samples at `to_rate`,
    through soxr (libsoxr's "HQ" band-limited resampler), on the CPU."""
    if from_rate == to_rate:
        return waveform
    out = soxr.resample(waveform.detach().cpu().numpy().astype(np.float32), from_rate, to_rate)
    return torch.from_numpy(np.ascontiguousarray(out))


def load_audio(source: AudioSource, sample_rate: int | None = None) -> torch.Tensor:
    """Decodes a path, encoded bytes, or an array into mono 16 kHz float32 samples.

    Args:
        source: a file path, the encoded bytes of a file, or raw samples shaped (T,), (C, T) or
            (T, C) (channels along the smaller dimension), float or integer PCM (int16 is scaled
            by 1/32768).
        sample_rate: the rate of raw samples (required for arrays, ignored otherwise).
    Returns:
        (T,) float32 tensor at 16 kHz, on the CPU.
    Raises:
        AudioDecodeError: if the input cannot be decoded, holds no samples, or holds NaN or
            infinite samples.
    """
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if sample_rate is None:
            raise ValueError("load_audio: pass sample_rate with raw sample arrays")
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(
                f"load_audio: sample_rate must be a positive integer, got {sample_rate}"
            )
        waveform = as_float_samples(
            source.detach().cpu() if isinstance(source, torch.Tensor) else source
        )
        sample_rate = int(sample_rate)
    else:
        data, sample_rate = _decode(source)
        waveform = torch.from_numpy(data.mean(axis=1))  # (T, C) -> (T,): the layout is known
    if waveform.numel() == 0:
        raise AudioDecodeError("audio holds no samples")
    if not bool(torch.isfinite(waveform).all()):  # NaN/inf would decode to nothing, silently
        raise AudioDecodeError("audio holds NaN or infinite samples")
    return to_mono_16k(waveform, sample_rate)


def audio_duration(source: str | Path | bytes) -> float:
    """Duration in seconds, read from the file header when the format has one."""
    try:
        info = sf.info(io.BytesIO(source) if isinstance(source, bytes) else source)
        if info.frames > 0:
            return info.frames / info.samplerate
    except Exception:  # noqa: BLE001 - header-less or unknown: decode to measure
        pass
    data, rate = _decode(source)
    return data.shape[0] / rate
