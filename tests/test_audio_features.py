import io
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ds2hub.audio import SAMPLE_RATE, AudioDecodeError, audio_duration, load_audio, resample
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


def test_utterance_normalisation_ignores_the_recording_gain():
    t = torch.arange(16000) / 16000
    vowel = sum(torch.sin(2 * math.pi * f * t) / k for k, f in enumerate([220, 440, 660], 1))
    frontend = LogSpectrogram(FeatureConfig(normalization="utterance"))
    loud, quiet = frontend(0.5 * vowel), frontend(0.005 * vowel)  # 40 dB apart
    assert torch.allclose(loud, quiet, atol=1e-3)
    assert float(loud.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(loud.std()) == pytest.approx(1.0, abs=1e-3)


def test_utterance_normalisation_takes_each_bins_own_mean_away():
    """A steady tone: `utterance` removes each bin's mean (a fixed channel is a constant offset
    in log power), so on average over time every bin of a steady sound is at zero."""
    t = torch.arange(16000) / 16000
    noise = 0.001 * torch.randn(16000, generator=torch.Generator().manual_seed(0))
    tone = torch.sin(2 * math.pi * 500 * t) + noise
    per_bin = LogSpectrogram(FeatureConfig(normalization="utterance"))(tone)
    assert float(per_bin.mean(dim=1).abs().max()) < 1e-4


def test_peak_normalisation_leaves_a_words_frames_alone_when_silence_is_added_around_it():
    """A pause before and after a word (noise 70 dB down, below the floor) moves every frame of
    mean-based `utterance` normalisation; `peak` keeps the word's frames as they were, at any gain."""
    t = torch.arange(6400) / SAMPLE_RATE
    word = sum(torch.sin(2 * math.pi * f * t) / k for k, f in enumerate([180, 360, 540, 900], 1))
    word = word * torch.hann_window(6400)
    quiet = 10 ** (-70 / 20) * float(word.abs().max()) * torch.randn(3200).clamp(-1, 1)
    padded = torch.cat([quiet, word, quiet])  # 20 frames of pause on each side
    inner = slice(2, -2)  # frames whose window overlaps the pause differ in any front end

    def word_frames(normalization: str, gain: float) -> tuple[torch.Tensor, torch.Tensor]:
        frontend = LogSpectrogram(FeatureConfig(normalization=normalization))
        alone, around = frontend(gain * word), frontend(gain * padded)
        return alone[:, inner], around[:, 20 : 20 + alone.shape[1]][:, inner]

    alone, around = word_frames("peak", 1.0)
    torch.testing.assert_close(around, alone, atol=1e-4, rtol=0)
    torch.testing.assert_close(word_frames("peak", 0.01)[1], alone, atol=1e-3, rtol=0)
    mean_alone, mean_around = word_frames("utterance", 1.0)
    assert float((mean_around - mean_alone).abs().mean()) > 0.2
    # A pause 40 dB down (above the 60 dB floor, as training's padding can be) does not move the
    # word's frames either: only the loudest bin sets the scale.
    padded = torch.cat([quiet * 10 ** (30 / 20), word, quiet * 10 ** (30 / 20)])
    louder_pause = LogSpectrogram(FeatureConfig(normalization="peak"))(padded)
    torch.testing.assert_close(
        louder_pause[:, 20 : 20 + alone.shape[1] + 4][:, inner], alone, atol=1e-4, rtol=0
    )


def test_peak_normalisation_maps_the_floor_to_minus_one_and_the_loudest_bin_to_one():
    t = torch.arange(8000) / SAMPLE_RATE
    fade = torch.linspace(1.0, 0.01, 8000)  # 40 dB quieter at the end
    word = fade * torch.sin(2 * math.pi * 440 * t)
    frontend = LogSpectrogram(FeatureConfig(normalization="peak"))
    features, raw = frontend(word), frontend.unnormalized(word)
    half_range = 30 * math.log(10) / 10  # 60 dB range: -1 at the floor, +1 at the peak
    torch.testing.assert_close(features, (raw - raw.max()) / half_range + 1)
    assert float(features.max()) == pytest.approx(1.0)
    assert float(features.min()) == pytest.approx(-1.0)  # bins at the floor
    assert float(features[:, -1].max()) < -0.1  # the last frame, ~35 dB down, stays well below
    silence = frontend(torch.zeros(1600))
    assert torch.equal(silence, torch.full_like(silence, -1.0))  # silence is floor, not peak
    with pytest.raises(ValueError, match="dynamic_range_db"):
        FeatureConfig(normalization="peak", dynamic_range_db=0.0)


def test_a_silent_band_stays_quiet():
    """8 kHz recordings upsampled to 16 kHz have nothing above 4 kHz: those bins must not be
    blown up to the same variance as speech."""
    speech = load_audio(REPO / "recipes" / "digits" / "test" / "test_0003.opus")
    narrow = resample(resample(speech, 16000, 8000), 8000, 16000)
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


# --- log-mel filterbank (features.n_mels) ---------------------------------------------------------
MEL = FeatureConfig(max_frequency_hz=4000, n_mels=40)


def _sine(hz: float, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return torch.sin(2 * math.pi * hz * t)


def test_mel_filters_are_spaced_on_the_mel_scale_up_to_the_top_frequency():
    centres = MEL.bin_frequencies
    assert MEL.n_bins == 40 and centres.shape == (40,)
    assert 0 < float(centres[0]) < 50 and 3600 < float(centres[-1]) < 4000
    # Equal steps in mel: narrow filters where formants are dense, wide ones at the top.
    mel = 2595 * torch.log10(1 + centres / 700)
    torch.testing.assert_close(mel.diff(), torch.full((39,), float(mel[0])), rtol=1e-4, atol=0)
    assert float(centres[1] - centres[0]) < 40 and float(centres[-1] - centres[-2]) > 180


@pytest.mark.parametrize("hz", [700.0, 1000.0, 2500.0])
def test_a_tone_lands_in_the_mel_filter_nearest_its_frequency(hz):
    features = LogSpectrogram(MEL).unnormalized(_sine(hz)).mean(dim=1)
    assert features.shape == (40,)
    nearest = int((MEL.bin_frequencies - hz).abs().argmin())
    assert int(features.argmax()) == nearest


def test_mel_features_ignore_the_gain_and_what_lies_above_the_top_frequency():
    frontend = LogSpectrogram(MEL)
    low, high = _sine(1000.0), 0.5 * _sine(6000.0)
    assert frontend(low).shape == (40, 101)
    torch.testing.assert_close(frontend(0.5 * low), frontend(0.005 * low), atol=1e-3, rtol=0)
    inner = slice(2, -2)  # (the edge frames splatter, as in the linear test above)
    torch.testing.assert_close(
        frontend(low + high)[:, inner], frontend(low)[:, inner], atol=0.05, rtol=0
    )


def test_mel_features_smooth_away_the_pitch_harmonics():
    """Two vowels with one spectral envelope (a formant at 1 kHz) and different pitches (100 and
    140 Hz): the linear bins resolve the harmonics and differ more than the mel filters do."""
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE

    def vowel(pitch: float) -> torch.Tensor:
        harmonics = torch.arange(1, int(4000 // pitch) + 1) * pitch
        envelope = torch.exp(-(((harmonics - 1000.0) / 400.0) ** 2)) + 0.05
        return (envelope[:, None] * torch.sin(2 * math.pi * harmonics[:, None] * t)).sum(0)

    def distance(config: FeatureConfig) -> float:
        frontend = LogSpectrogram(config)
        a, b = frontend(vowel(100.0)).mean(1), frontend(vowel(140.0)).mean(1)
        return float((a - b).norm() / a.norm())

    linear = FeatureConfig(max_frequency_hz=4000, normalization="peak")
    assert distance(replace(linear, n_mels=40)) < 0.5 * distance(linear)


@pytest.mark.parametrize("n_mels, top", [(0, None), (80, None), (64, 4000.0)])
def test_a_mel_count_the_fft_cannot_resolve_is_refused(n_mels, top):
    """Filters narrower than the 50 Hz bin spacing would read nothing: refused when read."""
    with pytest.raises(ValueError, match="n_mels"):
        FeatureConfig(n_mels=n_mels, max_frequency_hz=top)
    FeatureConfig(n_mels=64)  # 64 up to 8 kHz (or 40 up to 4 kHz) all see a bin


@pytest.mark.parametrize("normalization", ["gain", "running"])
def test_an_unknown_normalisation_is_refused(normalization):
    with pytest.raises(ValueError, match="normalization"):
        FeatureConfig(normalization=normalization)


def test_front_end_settings_read_back_from_to_dict():
    assert FeatureConfig(**MEL.to_dict()) == MEL
    assert FeatureConfig(**FeatureConfig().to_dict()) == FeatureConfig()


# --- the causal front end (features.normalization: global) --------------------------------------
def _global_frontend(audio: torch.Tensor, n_mels: int | None = None) -> LogSpectrogram:
    from ds2hub.features import frame_statistics

    frontend = LogSpectrogram(FeatureConfig(normalization="global", n_mels=n_mels))
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
    frontend = LogSpectrogram(FeatureConfig(normalization="global"))
    silence = frontend.unnormalized(torch.zeros(3200))
    floor = -80.0 * math.log(10) / 10
    assert torch.allclose(silence, torch.full_like(silence, floor))
    quiet = frontend.unnormalized(torch.randn(3200) * 1e-3)
    assert quiet.min() >= floor - 1e-5 and quiet.max() < 0


@pytest.mark.parametrize("n_mels", [None, 64])
def test_frames_of_a_padded_signal_equal_the_centred_spectrogram(n_mels):
    audio = torch.randn(16000) * 0.1
    frontend = _global_frontend(audio, n_mels)
    padded = torch.nn.functional.pad(audio[None, None], (160, 160), mode="reflect")[0, 0]
    torch.testing.assert_close(frontend.frames(padded), frontend(audio))
    with pytest.raises(ValueError, match="normalization: global"):
        LogSpectrogram(FeatureConfig()).frames(padded)


def test_statistics_only_for_a_global_front_end():
    with pytest.raises(ValueError, match="global"):
        LogSpectrogram(FeatureConfig()).set_statistics(torch.zeros(161), torch.ones(161), 1)
    assert LogSpectrogram(FeatureConfig()).has_statistics
    assert not LogSpectrogram(FeatureConfig(normalization="global")).has_statistics


REFERENCE = np.load(Path(__file__).parent / "data" / "torchaudio_reference.npz")
REFERENCE_CONFIGS = {  # as in tests/data/make_torchaudio_reference.py
    "linear": {},
    "mel40": {"n_mels": 40},
    "mel64_8k": {"n_mels": 64, "max_frequency_hz": 7600.0, "window_ms": 32.0},
    "linear_4k": {"max_frequency_hz": 4000.0},
    "odd_window": {"window_ms": 25.0, "hop_ms": 12.5},
}


@pytest.mark.parametrize("name", REFERENCE_CONFIGS)
@pytest.mark.parametrize("normalization", ["utterance", "peak", "global"])
def test_features_equal_what_torchaudio_computed(name, normalization):
    """Models trained when the front end ran on torchaudio (its Spectrogram and melscale_fbanks,
    saved in tests/data by make_torchaudio_reference.py) get the same inputs, within 1e-5."""
    config = FeatureConfig(normalization=normalization, **REFERENCE_CONFIGS[name])
    frontend = LogSpectrogram(config)
    wave = torch.from_numpy(REFERENCE["wave"])
    power = torch.from_numpy(REFERENCE[f"power_{name}"])
    torch.testing.assert_close(frontend.power(wave), power, rtol=1e-5, atol=1e-9)
    if config.n_mels:
        fbanks = torch.from_numpy(REFERENCE[f"fbanks_{name}"])
        torch.testing.assert_close(frontend.mel_fbanks, fbanks, rtol=0, atol=1e-6)
    expected = frontend.normalize(frontend.log_power(power))
    torch.testing.assert_close(frontend(wave), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("samples", [1, 100, 160])
def test_an_utterance_of_a_few_milliseconds_gives_a_frame_not_an_error(samples):
    """Evaluation keeps every utterance, however short; the centred STFT's reflection needs half
    a window plus a sample, so shorter audio is zero-padded to that (161 samples: 2 frames)."""
    frontend = LogSpectrogram()
    wave = torch.linspace(-0.5, 0.5, samples)
    features = frontend(wave)
    assert features.shape == (161, 2) and torch.isfinite(features).all()
    padded = frontend.reflect_pad(wave)
    batch, frames = frontend.batch(padded[None], torch.tensor([padded.numel()]))
    assert frames.tolist() == [2]
    torch.testing.assert_close(batch[0], features, atol=2e-5, rtol=0)
