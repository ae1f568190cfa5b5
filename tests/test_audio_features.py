import io
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from ds2hub.audio import SAMPLE_RATE, AudioDecodeError, audio_duration, load_audio
from ds2hub.features import FeatureConfig, LogSpectrogram

REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_audio_is_an_error_not_an_empty_transcript(bad):
    samples = np.zeros(1600, dtype=np.float32)
    samples[100] = bad
    buf = io.BytesIO()
    sf.write(buf, samples, 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN or infinite"):
        load_audio(buf.getvalue())  # a float WAV keeps the NaN
    with pytest.raises(AudioDecodeError, match="NaN or infinite"):
        load_audio(samples, sample_rate=16000)


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
    assert spec.std().item() == pytest.approx(1.0, abs=1e-3)
    assert torch.isfinite(LogSpectrogram()(torch.zeros(1600))).all()  # silence stays finite


def test_features_ignore_the_recording_gain():
    torch.manual_seed(0)
    t = torch.arange(16000) / 16000
    speechlike = torch.sin(2 * math.pi * 220 * t) * torch.sin(2 * math.pi * 3 * t) ** 2
    speechlike = speechlike + 1e-4 * torch.randn(16000)
    frontend = LogSpectrogram()
    loud, quiet = frontend(0.5 * speechlike), frontend(0.005 * speechlike)  # 40 dB apart
    assert torch.allclose(loud, quiet, atol=1e-3)


@pytest.mark.parametrize("normalization", ["utterance", "gain"])
def test_both_per_utterance_normalisations_ignore_the_recording_gain(normalization):
    t = torch.arange(16000) / 16000
    vowel = sum(torch.sin(2 * math.pi * f * t) / k for k, f in enumerate([220, 440, 660], 1))
    frontend = LogSpectrogram(FeatureConfig(normalization=normalization))
    loud, quiet = frontend(0.5 * vowel), frontend(0.005 * vowel)  # 40 dB apart
    assert torch.allclose(loud, quiet, atol=1e-3)
    assert float(loud.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(loud.std()) == pytest.approx(1.0, abs=1e-3)


def test_gain_normalisation_keeps_the_spectral_shape_that_per_bin_normalisation_removes():
    """A steady tone: its bin stays far above the rest with `gain`; `utterance` takes each bin's
    own mean away, so on average over time every bin of a steady sound is at zero."""
    t = torch.arange(16000) / 16000
    noise = 0.001 * torch.randn(16000, generator=torch.Generator().manual_seed(0))
    tone = torch.sin(2 * math.pi * 500 * t) + noise
    harmonic = 500 // 50  # the 500 Hz bin (50 Hz per bin)
    gain = LogSpectrogram(FeatureConfig(normalization="gain"))(tone)
    per_bin = LogSpectrogram(FeatureConfig(normalization="utterance"))(tone)
    assert float(gain[harmonic].mean() - gain[harmonic + 20].mean()) > 2.0
    assert float(per_bin.mean(dim=1).abs().max()) < 1e-4


def test_a_silent_band_stays_quiet():
    """8 kHz recordings upsampled to 16 kHz have nothing above 4 kHz: those bins must not be
    blown up to the same variance as speech."""
    speech = load_audio(REPO / "recipes" / "digits" / "test" / "test_0003.opus")
    narrow = torchaudio.functional.resample(
        torchaudio.functional.resample(speech, 16000, 8000), 8000, 16000
    )
    spec = LogSpectrogram()(narrow)
    assert spec[100:].std() < 0.1 * spec[:70].std()


def test_a_band_limited_front_end_keeps_the_bins_up_to_its_top_frequency():
    """`max_frequency_hz: 4000` (8 kHz corpora): 81 bins, those of the full front end, so energy
    above 4 kHz (a wideband synthetic voice's fricatives) no longer reaches the model."""
    config = FeatureConfig(max_frequency_hz=4000)
    assert config.n_bins == 81
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    low, high = torch.sin(2 * math.pi * 1000 * t), 0.5 * torch.sin(2 * math.pi * 6000 * t)
    full = LogSpectrogram().unnormalized(low + high)
    limited = LogSpectrogram(config)
    assert limited(low + high).shape == (81, full.shape[1])
    # A 6 kHz tone makes no difference to what a band-limited front end computes (the edge
    # frames, where the tones start and stop abruptly, splatter over every bin).
    inner = slice(2, -2)
    torch.testing.assert_close(
        limited(low + high)[:, inner], limited(low)[:, inner], atol=0.05, rtol=0
    )
    assert not torch.allclose(
        LogSpectrogram()(low + high)[:, inner], LogSpectrogram()(low)[:, inner], atol=0.05
    )
    torch.testing.assert_close(limited.unnormalized(low), LogSpectrogram().unnormalized(low)[:81])


@pytest.mark.parametrize("top", [0.0, -1.0, 8001.0])
def test_a_top_frequency_outside_the_spectrum_is_refused(top):
    with pytest.raises(ValueError, match="max_frequency_hz"):
        FeatureConfig(max_frequency_hz=top)


# --- the causal front end (features.normalization: global) --------------------------------------
def _global_frontend(audio: torch.Tensor) -> LogSpectrogram:
    from ds2hub.features import frame_statistics

    frontend = LogSpectrogram(FeatureConfig(normalization="global"))
    frontend.set_statistics(*frame_statistics([frontend.unnormalized(audio)]))
    return frontend


def test_global_statistics_normalise_each_bin_of_the_training_audio():
    audio = torch.randn(32000) * 0.1
    frontend = _global_frontend(audio)
    spec = frontend(audio)
    assert torch.allclose(spec.mean(dim=1), torch.zeros(161), atol=1e-4)
    assert torch.allclose(spec.std(dim=1, unbiased=False), torch.ones(161), atol=1e-3)
    assert int(frontend.count) == 201
    assert set(frontend.state_dict()) == {"mean", "std", "count"}


def test_global_features_of_a_frame_do_not_depend_on_later_audio():
    audio = torch.randn(32000) * 0.1
    frontend = _global_frontend(audio)
    whole = frontend(audio)
    louder_end = audio.clone()
    louder_end[20000:] *= 30  # the utterance front end would rescale every frame
    changed = frontend(louder_end)
    # Frames whose window ends before sample 20000 (window 320, hop 160, centred) are unchanged.
    last_untouched = (20000 - 160) // 160
    torch.testing.assert_close(changed[:, :last_untouched], whole[:, :last_untouched])
    utterance = LogSpectrogram(FeatureConfig())
    assert not torch.allclose(utterance(louder_end)[:, :10], utterance(audio)[:, :10])


def test_global_floor_is_absolute():
    frontend = LogSpectrogram(FeatureConfig(normalization="global", normalize=False))
    silence = frontend(torch.zeros(3200))
    floor = -80.0 * math.log(10) / 10
    assert torch.allclose(silence, torch.full_like(silence, floor))
    quiet = frontend(torch.randn(3200) * 1e-3)
    assert quiet.min() >= floor - 1e-5 and quiet.max() < 0


def test_frames_of_a_padded_signal_equal_the_centred_spectrogram():
    audio = torch.randn(16000) * 0.1
    frontend = _global_frontend(audio)
    padded = torch.nn.functional.pad(audio[None, None], (160, 160), mode="reflect")[0, 0]
    torch.testing.assert_close(frontend.frames(padded), frontend(audio))
    with pytest.raises(ValueError, match="normalization: global"):
        LogSpectrogram(FeatureConfig()).frames(padded)


def test_statistics_only_for_a_global_front_end():
    with pytest.raises(ValueError, match="global"):
        LogSpectrogram(FeatureConfig()).set_statistics(torch.zeros(161), torch.ones(161), 1)
    assert LogSpectrogram(FeatureConfig()).has_statistics
    assert not LogSpectrogram(FeatureConfig(normalization="global")).has_statistics
