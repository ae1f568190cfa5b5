"""Reading audio: any file or bytes soundfile (or torchcodec) can decode, as mono 16 kHz float32."""

from __future__ import annotations

import contextlib
import io
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch

SAMPLE_RATE = 16_000
# Raw arrays are taken at rates from telephone-band audio's to studio recordings'; a rate outside
# is a mistake (sample_rate=1 would turn 1,600 samples into 26 minutes of audio to recognise).
MIN_RATE, MAX_RATE = 4_000, 384_000

# A path, encoded bytes, raw samples (with a rate), or one of the ecosystem's containers: a
# `datasets` Audio value (`{"array", "sampling_rate"}`, undecoded `{"path", "bytes"}`, or
# torchcodec's `AudioDecoder`, which `datasets` >= 4 returns) or a transformers pipeline input
# (`{"raw", "sampling_rate"}`).
AudioSource = str | Path | bytes | np.ndarray | torch.Tensor | Mapping[str, Any]


class AudioDecodeError(ValueError):
    """Raised when bytes or a file cannot be decoded as audio."""


class AudioTooLong(AudioDecodeError):
    """Raised when audio is longer than the caller's limit (found before or while decoding)."""


DECODE_BLOCK = 1 << 16  # frames read at a time: peak memory follows the 16 kHz mono output


def _check_seconds(seconds: float, max_seconds: float | None) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise AudioTooLong(f"{seconds:.0f} s of audio; the limit is {max_seconds:g} s")


def _decode(source: str | Path | bytes, max_seconds: float | None = None) -> np.ndarray:
    """Decodes to (T,) float32 mono at 16 kHz, block by block: channels averaged and resampled
    (soxr) as they are read, so memory follows the output, not the decoded input (a 0.5 MB FLAC
    can hold half an hour of 48 kHz 5.1 audio). soundfile covers WAV/FLAC/Ogg Vorbis/Opus/MP3
    through libsndfile; torchcodec (FFmpeg, which then downmixes and resamples) is the fallback
    for anything else (m4a, webm ...).

    Raises:
        AudioTooLong: the header or the samples read so far pass `max_seconds`.
        AudioDecodeError: neither decoder can read it.
    """
    if not isinstance(source, bytes):
        path = Path(source)
        if path.is_dir():
            raise AudioDecodeError(f"{source} is a folder, not an audio file")
        if not path.exists():
            raise AudioDecodeError(f"{source} does not exist")
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with sf.SoundFile(handle) as sound:
            rate = sound.samplerate
            if sound.frames > 0:  # known from the header: refused before anything is decoded
                _check_seconds(sound.frames / rate, max_seconds)
            stream = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1)
            out, read = [], 0
            for block in sound.blocks(DECODE_BLOCK, dtype="float32", always_2d=True):
                read += block.shape[0]
                _check_seconds(read / rate, max_seconds)
                mono = block.mean(axis=1, dtype=np.float32)
                out.append(mono if stream is None else stream.resample_chunk(mono))
            if stream is not None:
                out.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
            declared = _declared_wav_frames(source)
            if declared is not None and read < declared:
                raise AudioDecodeError(
                    f"the audio is cut short: its header says {declared / rate:.2f} s, "
                    f"the data holds {read / rate:.2f} s"
                )
        return np.concatenate(out) if out else np.zeros(0, np.float32)
    except AudioDecodeError:  # too long, or cut short: nothing another decoder would change
        raise
    except Exception as sf_error:  # noqa: BLE001 - any libsndfile failure: try FFmpeg next
        try:
            return _decode_ffmpeg(source, max_seconds)
        except AudioTooLong:
            raise
        except Exception as codec_error:  # noqa: BLE001
            name = "<bytes>" if isinstance(source, bytes) else str(source)
            raise AudioDecodeError(
                f"cannot decode audio {name}: {sf_error}; {codec_error}"
            ) from None


def _declared_wav_frames(source: str | Path | bytes) -> int | None:
    """The frame count a PCM WAV header declares (None for other formats). libsndfile quietly
    reads what a cut-off WAV still holds; the header says how much there should be."""
    try:
        with wave.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as wav:
            frames = wav.getnframes()
            size = frames * wav.getnchannels() * wav.getsampwidth()
    except (wave.Error, EOFError, OSError):
        return None
    # 0 and 2^32 - 1 are what writers to a pipe put there: the length is not known.
    return frames if 0 < size < 0xFFFFFF00 else None


def preload_decoders() -> None:
    """Imports the FFmpeg decoder (torchcodec) now, if it is installed. Its first import takes
    seconds and holds the interpreter lock; a server calls this before it serves, so that the
    first upload in a format soundfile cannot read does not stall every other client."""
    with contextlib.suppress(ImportError, OSError, RuntimeError):  # then it fails when used
        import torchcodec.decoders  # noqa: F401


def _decode_ffmpeg(source: str | Path | bytes, max_seconds: float | None) -> np.ndarray:
    """(T,) float32 mono 16 kHz through torchcodec, the header's duration checked first."""
    from torchcodec.decoders import AudioDecoder

    decoder = AudioDecoder(
        source if isinstance(source, bytes) else str(source),
        sample_rate=SAMPLE_RATE,
        num_channels=1,
    )
    header = decoder.metadata.duration_seconds_from_header
    if header is not None:
        _check_seconds(float(header), max_seconds)
    samples = decoder.get_all_samples().data.mean(dim=0).numpy().astype(np.float32)
    _check_seconds(samples.size / SAMPLE_RATE, max_seconds)
    return samples


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


def unwrap_source(source: AudioSource, sample_rate: int | None = None) -> tuple[Any, int | None]:
    """The ecosystem's audio containers (`AudioSource`) as (path, bytes or samples; their rate):
    a container's own rate replaces `sample_rate`. Other sources are returned as they are.

    Raises:
        AudioDecodeError: a dict of none of the known forms, or samples without a rate.
    """
    if isinstance(source, Mapping):
        for key in ("array", "raw"):  # datasets' decoded Audio; transformers' pipeline input
            if key in source:
                rate = source.get("sampling_rate", source.get("sample_rate"))
                if rate is None:
                    raise AudioDecodeError(f"an audio dict with {key!r} needs 'sampling_rate'")
                samples = source[key]
                if not isinstance(samples, (np.ndarray, torch.Tensor)):
                    samples = np.asarray(samples, dtype=np.float32)  # (lists, from datasets)
                return samples, int(rate)
        if source.get("bytes") is not None:  # datasets' Audio(decode=False)
            return bytes(source["bytes"]), None
        if source.get("path"):
            return source["path"], None
        raise AudioDecodeError(
            "an audio dict needs 'array' (or 'raw') and 'sampling_rate', or 'bytes' or 'path'; "
            f"this one has {sorted(map(str, source))}"
        )
    if hasattr(source, "get_all_samples"):  # torchcodec's AudioDecoder (datasets >= 4)
        samples = source.get_all_samples()
        return samples.data, int(samples.sample_rate)
    return source, sample_rate


def load_audio(
    source: AudioSource, sample_rate: int | None = None, max_seconds: float | None = None
) -> torch.Tensor:
    """Decodes a path, encoded bytes, an array or an audio dict into mono 16 kHz float32 samples.

    Args:
        source: a file path, the encoded bytes of a file, raw samples shaped (T,), (C, T) or
            (T, C) (channels along the smaller dimension): floats in [-1, 1], or integer PCM of
            any width scaled by its full scale (int16 by 1/32768, int8, int32; uint8 as 8-bit
            WAV stores it, silence at 128); or a `datasets` / transformers audio value
            (`unwrap_source`).
        sample_rate: the rate of raw samples, 4 to 384 kHz (required for arrays, ignored
            otherwise; an audio dict's `sampling_rate` replaces it).
        max_seconds: refuse encoded audio longer than this, from its header when it has one,
            else once that much is decoded (None: no limit).
    Returns:
        (T,) float32 tensor at 16 kHz, on the CPU.
    Raises:
        AudioTooLong: encoded audio over `max_seconds`.
        AudioDecodeError: if the input cannot be decoded, holds no samples, or holds NaN or
            infinite samples.
    """
    source, sample_rate = unwrap_source(source, sample_rate)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if sample_rate is None:
            raise ValueError("load_audio: pass sample_rate with raw sample arrays")
        if int(sample_rate) != sample_rate or not MIN_RATE <= sample_rate <= MAX_RATE:
            raise ValueError(
                f"load_audio: sample_rate must be a whole number of Hz from {MIN_RATE} to "
                f"{MAX_RATE}, got {sample_rate}"
            )
        waveform = as_float_samples(
            source.detach().cpu() if isinstance(source, torch.Tensor) else source
        )
        sample_rate = int(sample_rate)
    else:
        waveform, sample_rate = torch.from_numpy(_decode(source, max_seconds)), SAMPLE_RATE
    if waveform.numel() == 0:
        raise AudioDecodeError("audio holds no samples")
    if not bool(torch.isfinite(waveform).all()):  # NaN/inf would decode to nothing, silently
        raise AudioDecodeError("audio holds NaN or infinite samples")
    return to_mono_16k(waveform, sample_rate)


def header_seconds(source: str | Path | bytes) -> float | None:
    """Duration in seconds as the file's header states it (soundfile reads the header only), or
    None when the format has none or soundfile cannot read it."""
    try:
        info = sf.info(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Exception:  # noqa: BLE001 - header-less or unknown to soundfile
        return None
    return info.frames / info.samplerate if info.frames > 0 else None


def audio_duration(source: str | Path | bytes) -> float:
    """Duration in seconds, read from the file header when the format has one."""
    seconds = header_seconds(source)
    return seconds if seconds is not None else _decode(source).size / SAMPLE_RATE
