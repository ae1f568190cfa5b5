import io

import numpy as np
import pytest
import soundfile as sf
import torch

from ds2hub.audio import SAMPLE_RATE, AudioDecodeError, audio_duration, load_audio
from ds2hub.features import FeatureConfig, LogSpectrogram


def _tone(rate: int, seconds: float, channels: int) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    "rate,channels,fmt", [(8000, 1, "WAV"), (44100, 2, "FLAC"), (48000, 2, "OGG")]
)
def test_any_rate_and_channel_count_becomes_mono_16k(tmp_path, rate, channels, fmt):
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, _tone(rate, 1.5, channels), rate, format=fmt)
    wave = load_audio(path)
    assert wave.dim() == 1 and wave.dtype == torch.float32
    assert abs(wave.numel() - 1.5 * SAMPLE_RATE) < 0.01 * SAMPLE_RATE
    assert audio_duration(path) == pytest.approx(1.5, abs=0.01)
    # Same audio from bytes in memory.
    assert torch.allclose(load_audio(path.read_bytes()), wave)


def test_downmix_is_the_channel_mean():
    stereo = torch.stack([torch.ones(16000), -torch.ones(16000) * 0.5])
    assert torch.allclose(load_audio(stereo, sample_rate=16000), torch.full((16000,), 0.25))


@pytest.mark.parametrize("payload", [b"", b"this is not audio at all" * 10])
def test_undecodable_bytes_raise_a_clear_error(payload):
    with pytest.raises(AudioDecodeError):
        load_audio(payload)


def test_empty_audio_is_an_error():
    buf = io.BytesIO()
    sf.write(buf, np.zeros((0, 1), dtype=np.float32), 16000, format="WAV")
    with pytest.raises(AudioDecodeError):
        load_audio(buf.getvalue())


def test_paper_spectrogram_shape_and_normalisation():
    config = FeatureConfig()
    assert (config.n_fft, config.hop_length, config.n_bins) == (320, 160, 161)
    spec = LogSpectrogram(config)(torch.randn(32000))
    assert spec.shape == (161, 201)
    assert torch.allclose(spec.mean(dim=1), torch.zeros(161), atol=1e-4)
    assert torch.allclose(spec.std(dim=1), torch.ones(161), atol=1e-2)
    assert torch.isfinite(LogSpectrogram()(torch.zeros(1600))).all()  # silence stays finite
