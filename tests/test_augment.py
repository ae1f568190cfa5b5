"""Augmentation: each transform's effect, the list a recipe composes, and the samples each shipped
recipe's list draws for a fixed seed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from scipy.signal import lfilter
from standins import make_audiofolder

from ds2hub.audio import SAMPLE_RATE
from ds2hub.cli.main import run_cli
from ds2hub.cli.recipes import find_recipes
from ds2hub.errors import ConfigError
from ds2hub.features import FeatureConfig, LogSpectrogram
from ds2hub.tokenizers import CharTokenizer
from ds2hub.training.data import SpeechDataModule
from ds2hub.training.data.augment import (
    VTLP,
    Augmenter,
    Equalizer,
    Narrowband,
    Noise,
    PadEnds,
    Rng,
    SpecAugment,
    Speed,
    Tempo,
    Transform,
    TrimEnds,
    build_transforms,
    change_tempo,
    equalize,
    peaking_filter,
    warp_frequency,
)

CONF = Path(__file__).parent / "conf" / "digits_tiny.yaml"
LINEAR = FeatureConfig()


def run(transforms: list[Transform], x: torch.Tensor, seed: int = 0, stage: str = "waveform"):
    """`x` through `transforms` with a seeded `Rng`."""
    augmenter = Augmenter(transforms, LINEAR)
    rng = Rng.seeded(seed)
    return augmenter.waveform(x, rng) if stage == "waveform" else augmenter.features(x, rng)


# --- the samples of the shipped recipes ----------------------------------------------------------
def word(i: int) -> torch.Tensor:
    """A fixed 'word': 0.5-0.7 s of a harmonic tone under a sine-squared envelope."""
    n = 8000 + 800 * i
    t = torch.arange(n, dtype=torch.float32) / 16000
    f0 = 110 + 15 * i
    wave = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 20))
    env = torch.sin(math.pi * torch.arange(n, dtype=torch.float32) / n) ** 2
    return (0.5 * wave * env / (wave * env).abs().max()).float()


# (samples, sum |wave|, sum |features|) of words 0-3 through a recipe's `data.augment` and front
# end, drawn from `Rng.seeded(0)` then `Rng.seeded(1)` (one Rng per seed, as one loader worker
# draws for the utterances it prepares). First made with the `AugmentConfig` this list replaced; the
# sums were made again when soxr replaced torchaudio's resampler (Speed, Narrowband): the lengths,
# so the draws, stayed; the sums moved by at most 0.11 %.
FINGERPRINTS = {
    "aishell": [(8000, 869.2439, 3679.149), (8000, 871.45508, 4096.431), (8728, 949.08618, 4555.741), (11556, 1255.1462, 5934.856), (8889, 1010.3029, 7158.909), (8000, 871.45508, 4096.431), (10667, 1160.1349, 5282.475), (11556, 1255.1462, 5934.856)],
    "commonvoice": [(8000, 869.2439, 3368.981), (8000, 871.45508, 3944.325), (8728, 949.08618, 4072.188), (11556, 1255.1462, 3053.686), (8889, 1010.3029, 5901.955), (8000, 871.45508, 3185.896), (10667, 1160.1349, 2514.766), (11556, 1255.1462, 5095.108)],
    "fsdd_digits": [(11154, 886.98175, 3425.517), (9347, 331.5275, 3319.895), (6029, 639.42883, 1782.751), (6204, 744.23102, 1632.976), (6957, 677.20111, 2107.155), (6371, 341.47653, 1153.27), (6310, 362.79224, 1494.407), (11556, 982.323, 3098.795)],
    "hsk_words": [(8000, 869.2439, 3675.857), (8800, 979.23926, 6205.488), (9600, 1043.9502, 4582.052), (10400, 1129.6274, 5409.747), (8889, 984.8952, 6570.976), (8800, 957.0166, 3934.668), (8728, 955.92334, 5548.371), (10400, 1129.6274, 5331.68)],
    "librispeech": [(8000, 869.2439, 3679.149), (8800, 957.0166, 4243.126), (9600, 1043.9502, 4775.495), (10400, 1173.8579, 8309.218), (8000, 875.89618, 6264.033), (8800, 993.94177, 7086.127), (9600, 1043.9502, 4775.495), (10400, 1333.7367, 8230.753)],
    "librispeech_bigram": [(8000, 869.2439, 3679.149), (8800, 957.0166, 4243.126), (9600, 1043.9502, 4775.495), (10400, 1173.8579, 8309.218), (8000, 875.89618, 6264.033), (8800, 993.94177, 7086.127), (9600, 1043.9502, 4775.495), (10400, 1333.7367, 8230.753)],
    # fsdd_digits's transforms on 40 mel filters up to 4 kHz (VTLP warps their centre frequencies)
    "fsdd_digits+mel": [(11154, 886.98175, 811.5353), (9347, 331.5275, 976.3872), (6029, 639.42883, 803.3613), (6204, 744.23102, 583.9824), (6957, 677.20111, 442.1466), (6371, 341.47653, 185.9741), (6310, 362.79224, 876.5604), (11556, 982.323, 945.7014)],
}  # fmt: skip


def augment_settings() -> dict[str, tuple[list, dict]]:
    """`data.augment` and `data.features` of every installed recipe with augmentation."""
    found = {}
    for recipe in find_recipes().recipes:
        data = (yaml.safe_load(recipe.path.read_text(encoding="utf-8")) or {}).get("data") or {}
        if data.get("augment"):
            found[recipe.name] = (data["augment"], data.get("features") or {})
    return found


def fingerprint(augment: list, features: dict) -> list[tuple[int, float, float]]:
    config = FeatureConfig(**features)
    augmenter = Augmenter(build_transforms(augment), config)  # a saved config.yaml's dicts
    frontend = LogSpectrogram(config)
    rows = []
    for seed in (0, 1):
        rng = Rng.seeded(seed)
        for i in range(4):
            with torch.no_grad():
                wave = augmenter.waveform(word(i), rng)
                features_ = augmenter.features(frontend(wave), rng)
            rows.append((wave.numel(), float(wave.abs().sum()), float(features_.abs().sum())))
    return rows


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_each_shipped_recipe_draws_the_same_samples_for_a_seed(name):
    recipe, _, variant = name.partition("+")
    augment, features = augment_settings()[recipe]
    if variant == "mel":
        features = {"max_frequency_hz": 4000, "n_mels": 40}
    got = fingerprint(augment, features)
    for (n, wave, feats), (want_n, want_wave, want_feats) in zip(got, FINGERPRINTS[name]):
        assert n == want_n
        assert wave == pytest.approx(want_wave, rel=1e-4, abs=1e-3)
        assert feats == pytest.approx(want_feats, rel=1e-4, abs=1e-2)


def test_every_recipe_with_augmentation_has_its_samples_checked():
    """A new recipe's list gets a fingerprint here (print `fingerprint(...)` for it)."""
    checked = {name.partition("+")[0] for name in FINGERPRINTS}
    assert set(augment_settings()) <= checked


# --- the list --------------------------------------------------------------------------------------
class Reverse(Transform):
    """A transform of a user's own: the waveform backwards. Counts the utterances it reversed."""

    calls = 0

    def __init__(self, prob: float = 1.0, gain: float = 1.0) -> None:
        super().__init__(prob)
        self.gain = gain

    def apply(self, wave: torch.Tensor, rng: Rng) -> torch.Tensor:
        type(self).calls += 1
        return self.gain * wave.flip(0)


def test_a_transform_of_your_own_runs_by_class_path(tiny_digits, tmp_path):
    """A `Transform` subclass named in the recipe runs in training (LightningCLI builds it), and
    from a saved config's plain dicts (as `ds2hub push` rebuilds the DataModule)."""
    mine = {"class_path": f"{__name__}.Reverse", "init_args": {"gain": 0.5}}
    Reverse.calls = 0
    cli = run_cli(
        [
            "fit", "--config", str(CONF), "--data.path", str(tiny_digits),
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir",
            str(tmp_path), "--trainer.fast_dev_run", "1", "--data.augment", yaml.safe_dump([mine]),
        ]
    )  # fmt: skip
    (transform,) = cli.datamodule.augment
    assert type(transform).__name__ == "Reverse" and transform.gain == 0.5
    assert Reverse.calls == 4  # the one training batch of fast_dev_run; validation is not augmented
    dm = SpeechDataModule(CharTokenizer(), str(tiny_digits), augment=[mine])
    dm.setup("fit")
    wave = torch.linspace(-1, 1, 1600)
    torch.testing.assert_close(dm.datasets["train"].augmenter.waveform(wave), 0.5 * wave.flip(0))
    assert dm.datasets["val"].augmenter is None


def test_the_list_is_applied_in_its_order_and_refuses_what_it_cannot_run():
    wave = torch.linspace(0, 1, 16000)
    cut = run([Reverse(), TrimEnds(max_ms=10.0)], wave)  # reversed, then cut
    assert float(cut[0]) > 0.99 and cut.numel() < 16000
    with pytest.raises(ConfigError, match="waveform transforms run before the front end"):
        Augmenter([SpecAugment(freq_masks=1), Speed()], LINEAR)
    with pytest.raises(ConfigError, match="class_path"):
        build_transforms([{"init_args": {"prob": 0.5}}])
    with pytest.raises(ConfigError, match="no class"):
        build_transforms([{"class_path": "ds2hub.training.data.augment.Nothing"}])
    with pytest.raises(ConfigError, match="not a Transform"):
        build_transforms([{"class_path": "torch.nn.Identity"}])
    assert build_transforms(None) == []


def test_a_seeded_rng_draws_the_same_samples_and_each_process_its_own():
    wave = word(0)
    transforms = [Speed(0.5), Noise(0.5), PadEnds(0.5)]
    assert torch.equal(run(transforms, wave, seed=3), run(transforms, wave, seed=3))
    outs = {tuple(run(transforms, wave, seed=s)[:50].tolist()) for s in range(6)}
    assert len(outs) > 2
    augmenter = Augmenter(transforms, LINEAR)
    torch.manual_seed(7)  # a loader worker's seed: its own Rng starts from it
    first = augmenter.waveform(wave)
    torch.testing.assert_close(first, Augmenter(transforms, LINEAR).waveform(wave, Rng.seeded(7)))
    assert augmenter.rng() is augmenter.rng()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: VTLP(warp_range=(0.0, 1.1)), "warp_range"),
        (lambda: Tempo(rate_range=(1.2, 0.9)), "rate_range"),
        (lambda: TrimEnds(prob=1.5), "prob"),
        (lambda: Equalizer(prob=-0.1), "prob"),
        (lambda: Equalizer(freq_range_hz=(100.0, 9000.0)), "freq_range_hz"),
        (lambda: Equalizer(q_range=(0.0, 1.0)), "q_range"),
        (lambda: Equalizer(bands=0), "bands"),
        (lambda: PadEnds(prob=2.0), "prob"),
        (lambda: PadEnds(level_db=(-40.0, -70.0)), "level_db"),
        (lambda: PadEnds(max_ms=-5.0), "max_ms"),
        (lambda: Speed(factors=(0.9, 0.0)), "factors"),
        (lambda: Noise(snr_db=(30.0, 0.0)), "snr_db"),
        (lambda: SpecAugment(freq_masks=-1), "SpecAugment"),
    ],
)
def test_bad_augmentation_settings_are_refused_when_read(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- waveform transforms ---------------------------------------------------------------------------
def test_speed_perturbation_changes_duration():
    assert run([Speed(1.0, (1.25,))], torch.randn(16000)).numel() == pytest.approx(12800, abs=2)


def test_trimming_cuts_each_end_within_its_limits():
    """Up to 60 ms or 15 % off each end, never more, and a different cut each time."""
    wave = torch.arange(16000, dtype=torch.float32)
    augmenter, rng = Augmenter([TrimEnds(1.0, 60.0, 0.15)], LINEAR), Rng.seeded(0)
    cuts = set()
    for _ in range(50):
        out = augmenter.waveform(wave, rng)
        start, end = int(out[0]), 16000 - 1 - int(out[-1])
        assert 0 <= start <= 960 and 0 <= end <= 960  # 60 ms at 16 kHz
        torch.testing.assert_close(out, wave[start : 16000 - end])  # a contiguous cut
        cuts.add((start, end))
    assert len(cuts) > 40
    short = torch.arange(1600, dtype=torch.float32)  # 100 ms: 15 % = 240 samples < 60 ms
    assert all(augmenter.waveform(short, rng).numel() >= 1600 - 2 * 240 for _ in range(50))


def dominant_hz(wave: torch.Tensor) -> float:
    return float(torch.fft.rfft(wave).abs().argmax()) * SAMPLE_RATE / wave.numel()


@pytest.mark.parametrize("rate", [0.8, 1.5])
def test_tempo_perturbation_changes_the_rate_and_keeps_the_pitch(rate):
    """Speed perturbation moves a 220 Hz voice to 220 * rate; tempo keeps it at 220 Hz."""
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = torch.sin(2 * torch.pi * 220.0 * t)
    tempo = run([Tempo(1.0, (rate, rate))], tone)
    speed = run([Speed(1.0, (rate,))], tone)
    assert tempo.numel() == pytest.approx(SAMPLE_RATE / rate, abs=2)
    middle = slice(tempo.numel() // 4, 3 * tempo.numel() // 4)
    assert dominant_hz(tempo[middle]) == pytest.approx(220.0, abs=4)
    assert dominant_hz(speed[middle]) == pytest.approx(220.0 * rate, abs=4)
    assert torch.isfinite(tempo).all()


@pytest.mark.parametrize("snr", [5.0, 20.0])
def test_noise_is_added_at_the_requested_snr(snr):
    clean = torch.sin(torch.arange(32000) * 0.05)
    noise = run([Noise(1.0, (snr, snr))], clean) - clean
    measured = 10 * math.log10(clean.pow(2).mean() / noise.pow(2).mean())
    assert measured == pytest.approx(snr, abs=0.1)
    assert torch.equal(run([Noise(1.0)], torch.zeros(800)), torch.zeros(800))  # silence stays


def test_noise_from_a_folder_of_recordings(tmp_path):
    sf.write(tmp_path / "hum.wav", 0.1 * np.sin(np.arange(8000) * 0.3).astype(np.float32), 8000)
    noisy = run([Noise(1.0, (10, 10), noise_dir=str(tmp_path))], torch.ones(20000))
    assert noisy.shape == (20000,) and not torch.equal(noisy, torch.ones(20000))
    with pytest.raises(FileNotFoundError):
        Noise(noise_dir=str(tmp_path / "empty"))


def test_narrowband_removes_everything_above_4khz():
    t = torch.arange(16000) / 16000
    low, high = torch.sin(2 * math.pi * 1000 * t), torch.sin(2 * math.pi * 6000 * t)
    out = run([Narrowband()], low + high)
    spectrum = torch.fft.rfft(out).abs()  # 1 Hz bins
    assert out.shape == (16000,)
    assert spectrum[1000] == pytest.approx(8000, rel=0.05)  # the 1 kHz tone passes
    assert spectrum[6000] < 0.01 * spectrum[1000]  # the 6 kHz tone is gone


@pytest.mark.parametrize("gain_db", [-9.0, 9.0])
def test_equalizer_colours_one_band_and_leaves_the_rest(gain_db):
    """A peaking band at 1 kHz raises (or cuts) a 1 kHz tone by its gain and leaves a 3.5 kHz
    tone as it was (up to the peak rescaling), and the result is never louder than the input."""
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    band, away = torch.sin(2 * math.pi * 1000 * t), torch.sin(2 * math.pi * 3500 * t)
    wave = 0.45 * (band + away)  # peak 0.9
    out = equalize(wave, [(1000.0, gain_db, 2.0)])
    spectrum = torch.fft.rfft(out[4000:12000]).abs()  # 2 Hz bins, past the filter's start
    relative_db = 20 * math.log10(spectrum[500] / spectrum[1750])
    assert relative_db == pytest.approx(gain_db, abs=0.5)
    assert out.shape == wave.shape and torch.isfinite(out).all()
    assert float(out.abs().max()) <= float(wave.abs().max()) + 1e-6


@pytest.mark.parametrize("gain_db", [-9.0, 9.0])
def test_peaking_filter_has_its_gain_at_the_centre_and_half_of_it_at_the_band_edges(gain_db):
    """RBJ peaking filter, Q 2 at 1 kHz: the full gain at 1 kHz, half of it (in dB) at the band
    edges f0 * (sqrt(1 + 1 / (4 Q^2)) +- 1 / (2 Q)), nothing far away."""
    impulse = torch.zeros(SAMPLE_RATE)
    impulse[0] = 1.0
    b, a = peaking_filter(1000.0, gain_db, 2.0)
    response = torch.fft.rfft(torch.from_numpy(lfilter(b, a, impulse.numpy()))).abs()  # 1 Hz

    def db(hz: float) -> float:
        return 20 * math.log10(float(response[round(hz)]))

    assert db(1000) == pytest.approx(gain_db, abs=0.05)
    for edge in (1000 * (math.sqrt(1 + 1 / 16) - 0.25), 1000 * (math.sqrt(1 + 1 / 16) + 0.25)):
        assert db(edge) == pytest.approx(gain_db / 2, abs=0.3)
    assert abs(db(6000)) < 0.3 and abs(db(50)) < 0.3


@pytest.mark.parametrize("bands", [[(1000.0, 9.0, 2.0)], [(300.0, -9.0, 0.7), (1000.0, 9.0, 2.0)]])
def test_equalizer_does_not_clip_audio_at_full_scale(bands):
    """A filter is linear: a signal at full scale (or past it, as after speed or tempo
    resampling) comes out as the same signal filtered at a tenth of the level, times ten, then
    rescaled to the input's peak: nothing is clipped on the way."""
    wave = torch.randn(8000, generator=torch.Generator().manual_seed(0))
    wave = 1.3 * wave / wave.abs().max()
    loud, quiet = equalize(wave, bands), equalize(0.1 * wave, bands)
    torch.testing.assert_close(loud / loud.abs().max(), quiet / quiet.abs().max())
    assert 1.0 < float(loud.abs().max()) <= 1.3 + 1e-5  # not clipped at 1, not louder


def test_equalizer_draws_new_bands_per_utterance():
    wave = torch.randn(8000, generator=torch.Generator().manual_seed(0)) * 0.1
    equalizer = Equalizer(1.0, bands=2, gain_db=10.0)
    augmenter, rng = Augmenter([equalizer], LINEAR), Rng.seeded(0)
    outs = [augmenter.waveform(wave, rng) for _ in range(5)]
    assert all(not torch.allclose(a, b) for a, b in zip(outs, outs[1:]))
    bands = Equalizer(bands=200).draw_bands(rng)
    assert all(100 <= f <= 4000 and -10 <= g <= 10 and 0.7 <= q <= 2 for f, g, q in bands)
    assert sum(f < 632 for f, _, _ in bands) == pytest.approx(100, abs=25)  # log-uniform


def test_padding_puts_quiet_noise_of_random_length_around_the_word_and_keeps_the_word():
    word_ = 0.5 * torch.sin(2 * math.pi * 440 * torch.arange(8000) / SAMPLE_RATE)
    augmenter, rng = Augmenter([PadEnds(1.0, 200.0, (-60.0, -50.0))], LINEAR), Rng.seeded(0)
    befores, afters = set(), set()
    for _ in range(20):
        out = augmenter.waveform(word_, rng)
        extra = out.numel() - word_.numel()
        assert 0 <= extra <= 2 * 3200  # at most 200 ms on each end
        # the word is intact somewhere inside, and what surrounds it is 50-60 dB down
        starts = [i for i in range(extra + 1) if torch.equal(out[i : i + 8000], word_)]
        assert len(starts) == 1
        befores.add(starts[0])
        afters.add(extra - starts[0])
        pad = torch.cat([out[: starts[0]], out[starts[0] + 8000 :]])
        if pad.numel():
            level = 20 * math.log10(float(pad.abs().max()) / 0.5)
            assert -60.01 <= level <= -49.99
    assert len(befores) >= 15 and len(afters) >= 15  # new lengths per utterance, per end
    shortest = Augmenter([PadEnds(1.0, 0.0625, (-60.0, -50.0))], LINEAR)
    for _ in range(200):  # the shortest pads: finite, never one lone sample of noise
        assert torch.isfinite(shortest.waveform(word_, rng)).all()
    assert augmenter.waveform(torch.zeros(0), rng).numel() == 0
    assert torch.equal(augmenter.waveform(torch.zeros(800), rng), torch.zeros(800))  # silence


# --- feature transforms ----------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_vtlp_moves_a_formant_by_the_warp_factor_and_keeps_the_top_bin(alpha):
    """VTLP: energy at bin 40 of 81 moves to bin 40 * alpha; the frames and the top bin stay."""
    spec = torch.zeros(81, 30)
    spec[40] = 1.0
    spec[80] = 2.0
    out = run([VTLP(1.0, (alpha, alpha))], spec, stage="features")
    assert out.shape == spec.shape
    centre = float((out[:70].sum(1) * torch.arange(70)).sum() / out[:70].sum())
    assert centre == pytest.approx(40 * alpha, abs=0.05)
    assert float(out[80, 0]) == pytest.approx(2.0)
    torch.testing.assert_close(out[:, 0], out[:, -1])  # the same warp for every frame


@pytest.mark.parametrize("alpha", [0.8, 0.9, 1.1, 1.25])
def test_vtlp_maps_the_whole_band_monotonically_onto_itself(alpha):
    """A ramp (bin f holds f): below the knee, output bin k comes from k / alpha; above it, the
    second segment rises to the top bin without folding back."""
    spec = torch.arange(81, dtype=torch.float32)[:, None].repeat(1, 3)
    out = warp_frequency(spec, alpha)[:, 0]
    assert (out[1:] - out[:-1] > 0).all()
    assert float(out[0]) == 0.0 and float(out[80]) == pytest.approx(80.0)
    knee = int(0.85 * 80 * min(alpha, 1.0))  # output bins below it lie on the first segment
    below = torch.arange(knee, dtype=torch.float32)
    torch.testing.assert_close(out[:knee], (below / alpha).clamp(max=80))


def test_vtlp_draws_a_factor_per_utterance():
    spec = torch.zeros(81, 5)
    spec[40] = 1.0
    augmenter, rng = Augmenter([VTLP(1.0, (0.9, 1.1))], LINEAR), Rng.seeded(0)
    peaks = {int(augmenter.features(spec, rng)[:, 0].argmax()) for _ in range(30)}
    assert len(peaks) >= 4 and min(peaks) >= 36 and max(peaks) <= 44


def test_vtlp_on_mel_features_scales_hertz_not_the_filter_index(tmp_path):
    """With `features.n_mels` the datamodule's augmenter warps each mel filter's frequency: a
    1 kHz tone warped by 1.2 lands in the filter nearest 1.2 kHz, not in filter 1.2 * index."""
    features = FeatureConfig(max_frequency_hz=4000, n_mels=40, normalization="peak")
    augment = [VTLP(1.0, (1.2, 1.2))]
    corpus = make_audiofolder(tmp_path / "fsdd")
    dm = SpeechDataModule(CharTokenizer(), str(corpus), text_column="transcription", holdout_column="speaker_id", holdout_values=["spk1"], test_split=None, features=features, augment=augment)  # fmt: skip
    dm.setup("fit")
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = dm.frontend(torch.sin(2 * math.pi * 1000 * t))
    warped = dm.datasets["train"].augmenter.features(tone, Rng.seeded(0))
    centres = features.bin_frequencies

    def centroid_hz(spec: torch.Tensor) -> float:
        weights = (spec.mean(dim=1) - spec.mean(dim=1).min()).clamp_min(0)
        return float((weights * centres).sum() / weights.sum())

    assert centroid_hz(tone) == pytest.approx(1000, rel=0.02)
    assert centroid_hz(warped) == pytest.approx(1200, rel=0.02)
    by_index = warp_frequency(tone, 1.2)  # what warping the filter index would do
    assert centroid_hz(by_index) > 1250


def test_specaugment_masks_bands_and_frames_with_the_utterance_mean():
    """Masks hold the utterance's mean: zero for mean-normalised features, -0.5 here (as with
    `normalization: peak`, whose zero is brighter than most of a word)."""
    spec = 0.1 * torch.rand(161, 300, generator=torch.Generator().manual_seed(0)) - 0.55
    mean = float(spec.mean())
    masks = SpecAugment(
        2, freq_mask_width=20, time_masks=2, time_mask_width=30, time_mask_max_ratio=0.2
    )
    out = run([masks], spec, stage="features")
    masked = out == mean
    assert masked.all(dim=1).any() and masked.all(dim=0).any()  # whole bands and whole frames
    assert (out == spec).sum() > 0.5 * spec.numel() and not (out == 0).any()
    widths = masked.all(dim=0).sum(), masked.all(dim=1).sum()
    assert widths[0] < 2 * 30 and widths[1] < 2 * 20
    assert torch.equal(run([SpecAugment()], spec, stage="features"), spec)  # no masks: as is


REFERENCE = np.load(Path(__file__).parent / "data" / "torchaudio_reference.npz")


@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_tempo_equals_what_torchaudio_computed(rate):
    """The phase vocoder gives what torchaudio's did (tests/data/make_torchaudio_reference.py)."""
    out = change_tempo(torch.from_numpy(REFERENCE["wave"]), rate)
    torch.testing.assert_close(out, torch.from_numpy(REFERENCE[f"tempo_{rate}"]), atol=1e-5, rtol=0)


def test_the_equaliser_equals_what_it_computed_on_torchaudio():
    """Two peaking filters in series (scipy's lfilter now, torchaudio's then), peak-limited."""
    bands = [(1000.0, 9.0, 2.0), (300.0, -6.0, 0.7)]  # as in make_torchaudio_reference.py
    out = equalize(torch.from_numpy(REFERENCE["wave"]), bands)
    torch.testing.assert_close(out, torch.from_numpy(REFERENCE["equalize"]), atol=1e-5, rtol=0)
