"""Reading audio: any file or bytes soundfile (or torchcodec) can decode, as mono 16 kHz float32."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16_000

AudioSource = str | Path | bytes | np.ndarray | torch.Tensor


class AudioDecodeError(ValueError):
    """Raised when bytes or a file cannot be decoded as audio."""


def _decode(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """Returns (samples (T, C) float32, sample rate). soundfile covers WAV/FLAC/Ogg Vorbis/Opus/MP3
    through libsndfile; torchcodec (FFmpeg) is the fallback for anything else (m4a, webm ...)."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        data, rate = sf.read(handle, dtype="float32", always_2d=True)
        return data, rate
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


def to_mono_16k(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Downmixes (C, T) or (T,) audio to mono and resamples it to 16 kHz.

    Args:
        waveform: (T,) or (C, T) float tensor.
        sample_rate: its rate in Hz.
    Returns:
        (T',) float32 tensor at 16 kHz.
    """
    if waveform.dim() == 2:
        waveform = waveform.mean(dim=0)
    waveform = waveform.to(torch.float32)
    if sample_rate != SAMPLE_RATE:
        waveform = AF.resample(waveform, sample_rate, SAMPLE_RATE)
    return waveform


def load_audio(source: AudioSource, sample_rate: int | None = None) -> torch.Tensor:
    """Decodes a path, encoded bytes, or an array into mono 16 kHz float32 samples.

    Args:
        source: a file path, the encoded bytes of a file, or raw samples shaped (T,) or (C, T).
        sample_rate: the rate of raw samples (required for arrays, ignored otherwise).
    Returns:
        (T,) float32 tensor at 16 kHz.
    Raises:
        AudioDecodeError: if the input cannot be decoded or holds no samples.
    """
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if sample_rate is None:
            raise ValueError("load_audio: pass sample_rate with raw sample arrays")
        waveform = torch.as_tensor(source)
    else:
        data, sample_rate = _decode(source)
        waveform = torch.from_numpy(data.T.copy())  # (C, T)
    if waveform.numel() == 0:
        raise AudioDecodeError("audio holds no samples")
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
