"""Corpus layouts, SortaGrad and duration batching, augmentation, bad data, recipes, DDP."""

from __future__ import annotations

import csv
import io
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from standins import (
    make_aishell,
    make_audiofolder,
    make_commonvoice,
    make_fleurs,
    make_librispeech,
)

from ds2hub.audio import SAMPLE_RATE
from ds2hub.cli.main import run_cli
from ds2hub.features import FeatureConfig
from ds2hub.tokenizers import CharTokenizer, MandarinTokenizer
from ds2hub.training.data import SpeechDataModule
from ds2hub.training.data.augment import (
    AugmentConfig,
    Augmenter,
    equalize,
    pad_ends,
    peaking_filter,
    random_bands,
    warp_frequency,
)
from ds2hub.training.data.sampler import DurationBatchSampler

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    return {
        "librispeech": make_librispeech(root / "librispeech"),
        "fleurs": make_fleurs(root / "fleurs"),
        "aishell": make_aishell(root / "aishell"),
        "commonvoice": make_commonvoice(root / "commonvoice"),
        "fsdd": make_audiofolder(root / "fsdd"),
        "hsk": make_audiofolder(root / "hsk", mandarin=True),
    }


LAYOUTS = {
    "librispeech-all": ("librispeech", CharTokenizer, dict(name="all", train_split="train.clean.100+train.other.500", val_split="validation.clean", test_split="test.clean")),
    "librispeech-clean": ("librispeech", CharTokenizer, dict(name="clean", train_split="train.100")),
    "fleurs": ("fleurs", CharTokenizer, dict(data_dir="en_us", text_column="transcription")),
    "aishell": ("aishell", MandarinTokenizer, dict(val_split="dev")),
    "commonvoice": ("commonvoice", CharTokenizer, dict(val_split="dev")),
    "audiofolder-holdout": ("fsdd", CharTokenizer, dict(text_column="transcription", holdout_column="speaker_id", holdout_values=["spk0"], test_holdout_values=["spk1"], test_split=None)),
}  # fmt: skip


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_loads_through_the_datamodule(layout, corpora):
    corpus, tokenizer, kwargs = LAYOUTS[layout]
    dm = SpeechDataModule(tokenizer(), str(corpora[corpus]), batch_size=4, **kwargs)
    dm.setup("fit")
    dm.setup("test")
    batch = next(iter(dm.train_dataloader()))
    assert batch["features"].shape[:2] == (4, 161)
    assert all(dm.tokenizer.encode(t) for t in batch["texts"])
    assert len(dm.datasets["val"]) >= 3 and len(dm.datasets["test"]) >= 3
    if layout == "librispeech-all":  # "+" concatenates splits, as for the 960 h recipe
        assert len(dm.datasets["train"]) == 16
    if layout == "aishell":
        assert all(
            " " not in dm.tokenizer.normalize(t) for t in batch["texts"]
        )  # segmentation removed


def test_holdout_keeps_groups_disjoint(corpora):
    dm = SpeechDataModule(CharTokenizer(), str(corpora["fsdd"]), text_column="transcription", holdout_column="speaker_id", holdout_values=["spk1"], test_split=None)  # fmt: skip
    dm.setup("fit")
    train = set(dm.datasets["train"].data["speaker_id"])
    val = set(dm.datasets["val"].data["speaker_id"])
    assert val == {"spk1"} and "spk1" not in train
    words = SpeechDataModule(MandarinTokenizer(), str(corpora["hsk"]), text_column="transcription", holdout_column="transcription", holdout_fraction=0.25, test_split=None)  # fmt: skip
    words.setup("fit")
    held = set(words.datasets["val"].data["transcription"])
    assert held and not held & set(words.datasets["train"].data["transcription"])


def test_streaming_reads_the_same_corpus(corpora):
    dm = SpeechDataModule(CharTokenizer(), str(corpora["librispeech"]), name="clean", train_split="train.100", batch_size=3, streaming=True, sortagrad=False)  # fmt: skip
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert sorted(b["features"].size(0) for b in batches) == [2, 3, 3]  # bucketed, then shuffled


# --- SortaGrad and duration batching -------------------------------------------------------------
DURATIONS = [float(d) for d in np.random.default_rng(0).uniform(0.5, 15.0, 400)]


def test_sortagrad_first_epoch_is_shortest_first_then_shuffled():
    sampler = DurationBatchSampler(DURATIONS, max_batch_seconds=60.0)
    first = [max(DURATIONS[i] for i in b) for b in sampler.batches(0)]
    assert first == sorted(first)
    later = [max(DURATIONS[i] for i in b) for b in sampler.batches(1)]
    assert later != sorted(later)


def test_batches_respect_the_padded_duration_budget_and_cover_everything():
    sampler = DurationBatchSampler(DURATIONS, max_batch_seconds=60.0, max_batch_size=32)
    for epoch in range(3):
        batches = sampler.batches(epoch)
        assert all(max(DURATIONS[i] for i in b) * len(b) <= 60.0 and len(b) <= 32 for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(len(DURATIONS)))


def test_bucketing_reduces_padding():
    bucketed = DurationBatchSampler(DURATIONS, 60.0, sortagrad=False).padding_fraction(1)
    random_batches = DurationBatchSampler(
        DURATIONS, 60.0, sortagrad=False, bucketing=False
    ).padding_fraction(1)
    assert bucketed < 0.05 < 0.3 < random_batches


def test_ddp_ranks_get_different_batches_and_the_same_number():
    ranks = [
        DurationBatchSampler(DURATIONS, 60.0, num_replicas=3, rank=r, seed=7) for r in range(3)
    ]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in ranks]
        assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(ranks[0])
        seen = [i for batches in per_rank for b in batches for i in b]
        assert set(seen) == set(range(len(DURATIONS)))  # all data, each rank its own batches
        firsts = [tuple(b[0]) for b in per_rank]
        assert len(set(firsts)) == 3


def test_budget_below_longest_utterance_is_a_clear_error():
    with pytest.raises(ValueError, match="max_batch_seconds"):
        DurationBatchSampler([1.0, 30.0], max_batch_seconds=20.0)


# --- augmentation ----------------------------------------------------------------------------------
def test_speed_perturbation_changes_duration():
    aug = Augmenter(AugmentConfig(speed_prob=1.0, speed_factors=(1.25,)))
    assert aug.waveform(torch.randn(16000)).numel() == pytest.approx(16000 / 1.25, abs=2)


def test_trimming_cuts_each_end_within_its_limits():
    """`trim_prob`: up to 60 ms or 15 % off each end, never more, and a different cut each time."""
    random.seed(0)
    wave = torch.arange(16000, dtype=torch.float32)
    aug = Augmenter(AugmentConfig(trim_prob=1.0, trim_max_ms=60.0, trim_max_ratio=0.15))
    cuts = set()
    for _ in range(50):
        out = aug.waveform(wave)
        start, end = int(out[0]), 16000 - 1 - int(out[-1])
        assert 0 <= start <= 960 and 0 <= end <= 960  # 60 ms at 16 kHz
        torch.testing.assert_close(out, wave[start : 16000 - end])  # a contiguous cut
        cuts.add((start, end))
    assert len(cuts) > 40
    short = torch.arange(1600, dtype=torch.float32)  # 100 ms: 15 % = 240 samples < 60 ms
    assert all(aug.waveform(short).numel() >= 1600 - 2 * 240 for _ in range(50))


def dominant_hz(wave: torch.Tensor) -> float:
    return float(torch.fft.rfft(wave).abs().argmax()) * SAMPLE_RATE / wave.numel()


@pytest.mark.parametrize("rate", [0.8, 1.5])
def test_tempo_perturbation_changes_the_rate_and_keeps_the_pitch(rate):
    """Speed perturbation moves a 220 Hz voice to 220 * rate; tempo keeps it at 220 Hz."""
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = torch.sin(2 * torch.pi * 220.0 * t)
    tempo = Augmenter(AugmentConfig(tempo_prob=1.0, tempo_range=(rate, rate))).waveform(tone)
    speed = Augmenter(AugmentConfig(speed_prob=1.0, speed_factors=(rate,))).waveform(tone)
    assert tempo.numel() == pytest.approx(SAMPLE_RATE / rate, abs=2)
    middle = slice(tempo.numel() // 4, 3 * tempo.numel() // 4)
    assert dominant_hz(tempo[middle]) == pytest.approx(220.0, abs=4)
    assert dominant_hz(speed[middle]) == pytest.approx(220.0 * rate, abs=4)
    assert torch.isfinite(tempo).all()


@pytest.mark.parametrize("snr", [5.0, 20.0])
def test_noise_is_added_at_the_requested_snr(snr):
    torch.manual_seed(0)
    clean = torch.sin(torch.arange(32000) * 0.05)
    noisy = Augmenter(AugmentConfig(noise_prob=1.0, noise_snr_db=(snr, snr))).waveform(clean)
    noise = noisy - clean
    measured = 10 * math.log10(clean.pow(2).mean() / noise.pow(2).mean())
    assert measured == pytest.approx(snr, abs=0.1)


def test_noise_from_a_folder_of_recordings(tmp_path):
    sf.write(tmp_path / "hum.wav", 0.1 * np.sin(np.arange(8000) * 0.3).astype(np.float32), 8000)
    noisy = Augmenter(
        AugmentConfig(noise_prob=1.0, noise_snr_db=(10, 10), noise_dir=str(tmp_path))
    ).waveform(torch.ones(20000))
    assert noisy.shape == (20000,) and not torch.equal(noisy, torch.ones(20000))


def test_narrowband_removes_everything_above_4khz():
    t = torch.arange(16000) / 16000
    low, high = torch.sin(2 * math.pi * 1000 * t), torch.sin(2 * math.pi * 6000 * t)
    out = Augmenter(AugmentConfig(narrowband_prob=1.0)).waveform(low + high)
    spectrum = torch.fft.rfft(out).abs()  # 1 Hz bins
    assert out.shape == (16000,)
    assert spectrum[1000] == pytest.approx(8000, rel=0.05)  # the 1 kHz tone passes
    assert spectrum[6000] < 0.01 * spectrum[1000]  # the 6 kHz tone is gone


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_vtlp_moves_a_formant_by_the_warp_factor_and_keeps_the_top_bin(alpha):
    """VTLP: energy at bin 40 of 81 moves to bin 40 * alpha; the frames and the top bin stay."""
    spec = torch.zeros(81, 30)
    spec[40] = 1.0
    spec[80] = 2.0
    out = Augmenter(AugmentConfig(vtlp_prob=1.0, vtlp_range=(alpha, alpha))).spectrogram(spec)
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
    b, a = (torch.tensor(c) for c in peaking_filter(1000.0, gain_db, 2.0))
    response = torch.fft.rfft(AF.lfilter(impulse, a, b, clamp=False)).abs()  # 1 Hz bins

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
    torch.manual_seed(0)
    wave = torch.randn(8000)
    wave = 1.3 * wave / wave.abs().max()
    loud, quiet = equalize(wave, bands), equalize(0.1 * wave, bands)
    torch.testing.assert_close(loud / loud.abs().max(), quiet / quiet.abs().max())
    assert 1.0 < float(loud.abs().max()) <= 1.3 + 1e-5  # not clipped at 1, not louder


def test_equalizer_draws_new_bands_per_utterance():
    random.seed(0)
    wave = torch.randn(8000) * 0.1
    aug = Augmenter(AugmentConfig(eq_prob=1.0, eq_bands=2, eq_gain_db=10.0))
    outs = [aug.waveform(wave) for _ in range(5)]
    assert all(not torch.allclose(a, b) for a, b in zip(outs, outs[1:]))
    bands = random_bands(200, 10.0, (100.0, 4000.0), (0.7, 2.0))
    assert all(100 <= f <= 4000 and -10 <= g <= 10 and 0.7 <= q <= 2 for f, g, q in bands)
    assert sum(f < 632 for f, _, _ in bands) == pytest.approx(100, abs=25)  # log-uniform
    assert AugmentConfig(eq_prob=0.5).enabled and not AugmentConfig(eq_bands=2).enabled


def test_padding_puts_quiet_noise_of_random_length_around_the_word_and_keeps_the_word():
    random.seed(0)
    word = 0.5 * torch.sin(2 * math.pi * 440 * torch.arange(8000) / SAMPLE_RATE)
    aug = Augmenter(AugmentConfig(pad_prob=1.0, pad_max_ms=200.0, pad_level_db=(-60.0, -50.0)))
    befores, afters = set(), set()
    for _ in range(20):
        out = aug.waveform(word)
        extra = out.numel() - word.numel()
        assert 0 <= extra <= 2 * 3200  # at most 200 ms on each end
        # the word is intact somewhere inside, and what surrounds it is 50-60 dB down
        starts = [i for i in range(extra + 1) if torch.equal(out[i : i + 8000], word)]
        assert len(starts) == 1
        befores.add(starts[0])
        afters.add(extra - starts[0])
        pad = torch.cat([out[: starts[0]], out[starts[0] + 8000 :]])
        if pad.numel():
            level = 20 * math.log10(float(pad.abs().max()) / 0.5)
            assert -60.01 <= level <= -49.99
    assert len(befores) >= 15 and len(afters) >= 15  # new lengths per utterance, per end
    random.seed(1)
    for _ in range(200):  # the shortest pads: finite, never one lone sample of noise
        assert torch.isfinite(pad_ends(word, 0.0625, (-60.0, -50.0))).all()
    assert pad_ends(torch.zeros(0), 100.0, (-60.0, -50.0)).numel() == 0
    assert torch.equal(aug.waveform(torch.zeros(800)), torch.zeros(800))  # silence stays silence
    assert AugmentConfig(pad_prob=0.5).enabled and not AugmentConfig(pad_max_ms=100.0).enabled


@pytest.mark.parametrize(
    "bad",
    [
        {"vtlp_range": (0.0, 1.1)},
        {"tempo_range": (1.2, 0.9)},
        {"trim_prob": 1.5},
        {"eq_prob": -0.1},
        {"eq_freq_range_hz": (100.0, 9000.0)},
        {"eq_q_range": (0.0, 1.0)},
        {"eq_bands": -1},
        {"pad_prob": 2.0},
        {"pad_level_db": (-40.0, -70.0)},
        {"pad_max_ms": -5.0},
    ],
)
def test_bad_augmentation_settings_are_refused_when_read(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        AugmentConfig(**bad)


def test_vtlp_draws_a_factor_per_utterance():
    random.seed(0)
    spec = torch.zeros(81, 5)
    spec[40] = 1.0
    aug = Augmenter(AugmentConfig(vtlp_prob=1.0, vtlp_range=(0.9, 1.1)))
    peaks = {int(aug.spectrogram(spec)[:, 0].argmax()) for _ in range(30)}
    assert len(peaks) >= 4 and min(peaks) >= 36 and max(peaks) <= 44
    assert AugmentConfig(vtlp_prob=0.5).enabled


def test_vtlp_on_mel_features_scales_hertz_not_the_filter_index(corpora):
    """With `features.n_mels` the datamodule's augmenter warps each mel filter's frequency: a
    1 kHz tone warped by 1.2 lands in the filter nearest 1.2 kHz, not in filter 1.2 * index."""
    features = FeatureConfig(max_frequency_hz=4000, n_mels=40, normalization="gain")
    augment = AugmentConfig(vtlp_prob=1.0, vtlp_range=(1.2, 1.2))
    dm = SpeechDataModule(CharTokenizer(), str(corpora["fsdd"]), text_column="transcription", holdout_column="speaker_id", holdout_values=["spk1"], test_split=None, features=features, augment=augment)  # fmt: skip
    dm.setup("fit")
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = dm.frontend(torch.sin(2 * math.pi * 1000 * t))
    warped = dm.datasets["train"].augmenter.spectrogram(tone)
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
    torch.manual_seed(0)
    spec = 0.1 * torch.rand(161, 300) - 0.55
    mean = float(spec.mean())
    out = Augmenter(
        AugmentConfig(
            freq_masks=2,
            freq_mask_width=20,
            time_masks=2,
            time_mask_width=30,
            time_mask_max_ratio=0.2,
        )
    ).spectrogram(spec)
    masked = out == mean
    assert masked.all(dim=1).any() and masked.all(dim=0).any()  # whole bands and whole frames
    assert (out == spec).sum() > 0.5 * spec.numel() and not (out == 0).any()
    assert Augmenter(AugmentConfig()).config.enabled is False


# --- bad data ---------------------------------------------------------------------------------------
def _flac_truncated() -> bytes:
    buf = io.BytesIO()
    sf.write(
        buf,
        (0.1 * np.random.default_rng(2).standard_normal(16000)).astype(np.float32),
        16000,
        format="FLAC",
    )
    return buf.getvalue()[:200]  # the header says 1 s; the frames are gone


def _wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    sf.write(
        buf,
        (0.1 * np.random.default_rng(1).standard_normal(int(16000 * seconds))).astype(np.float32),
        16000,
        format="WAV",
    )
    return buf.getvalue()


def test_bad_data_is_dropped_by_reason_and_training_stays_finite(tiny_digits, tmp_path):
    root = tmp_path / "bad"
    (root / "train").mkdir(parents=True)
    rows = []
    with open(tiny_digits / "train" / "metadata.csv") as f:
        good = list(csv.DictReader(f))[:8]
    for r in good:
        (root / "train" / r["file_name"]).write_bytes(
            (tiny_digits / "train" / r["file_name"]).read_bytes()
        )
        rows.append((r["file_name"], r["text"]))
    bad = {
        "corrupt.flac": (_flac_truncated(), "one two"),  # valid header, body lost
        "notaudio.flac": (b"<html>this is not audio</html>" * 40, "three"),
        "empty.wav": (_wav(0.0), "four"),
        "toolong.wav": (_wav(25.0), "five"),
        "silent_text.wav": (_wav(1.0), ""),
        "digits.wav": (_wav(1.0), "call 911 now"),
        "mandarin.wav": (_wav(1.0), "你好"),
        "ctc_infeasible.wav": (_wav(0.15), "seven seven seven eight eight eight"),
    }
    for name, (data, text) in bad.items():
        (root / "train" / name).write_bytes(data)
        rows.append((name, text))
    with open(root / "train" / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text"])
        writer.writerows(rows)
    for split in ("validation", "test"):  # same columns in every split (no duration: decoded)
        (root / split).mkdir()
        with (
            open(tiny_digits / split / "metadata.csv") as f,
            open(root / split / "metadata.csv", "w", newline="") as out,
        ):
            writer = csv.writer(out)
            writer.writerow(["file_name", "text"])
            for r in csv.DictReader(f):
                writer.writerow([r["file_name"], r["text"]])
                (root / split / r["file_name"]).write_bytes(
                    (tiny_digits / split / r["file_name"]).read_bytes()
                )

    cli = run_cli(
        [
            "fit", "--config", str(Path(__file__).parent / "conf" / "digits_tiny.yaml"), "--data.path", str(root),
            "--data.batch_size", "16", "--trainer.max_steps", "3", "--trainer.max_epochs", "3",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
        ]
    )  # fmt: skip
    dropped = cli.datamodule.dropped["train"]
    assert dropped["undecodable audio"] == 1  # non-audio bytes: found from the header
    assert (
        float(cli.trainer.callback_metrics["train/skipped_undecodable"]) >= 1
    )  # corrupt body: at load
    assert dropped["zero-length audio"] == 1
    assert dropped["longer than max_duration"] == 1
    assert dropped["empty transcript"] == 1
    assert dropped["characters outside the tokenizer"] == 2
    assert (
        len(cli.datamodule.datasets["train"]) == 10
    )  # 8 good, the CTC-infeasible one, the corrupt body
    assert cli.trainer.global_step == 3
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])
    assert float(metrics["train/skipped_ctc"]) >= 1  # the 0.15 s clip with a long transcript


# (Every recipe runs through fast_dev_run in tests/test_recipes.py, the smoke harness.)


# --- DDP ----------------------------------------------------------------------------------------------
def test_two_process_ddp_on_cpu_survives_an_empty_batch_and_counts_evaluation_once(
    tiny_digits, tmp_path
):
    """Real DDP (gloo), two processes. One rank gets a batch in which nothing decodes (it must still
    join the gradient all-reduce, or the run hangs); validation has an odd number of utterances,
    which must each be scored exactly once (no batch repeated to even out the ranks)."""
    root = tmp_path / "data"
    with open(tiny_digits / "train" / "metadata.csv") as f:
        pool = [(r["file_name"], r["text"]) for r in csv.DictReader(f)]
    for split, rows in (("train", pool[:7]), ("validation", pool[7:12])):
        (root / split).mkdir(parents=True)
        for name, _ in rows:
            (root / split / name).write_bytes((tiny_digits / "train" / name).read_bytes())
        if split == "train":
            (root / split / "corrupt.flac").write_bytes(_flac_truncated())
            rows.append(("corrupt.flac", "one two"))
        with open(root / split / "metadata.csv", "w", newline="") as out:
            csv.writer(out).writerows([("file_name", "text"), *rows])
    cmd = [
        sys.executable, "-m", "ds2hub", "fit", "--config", str(Path(__file__).parent / "conf" / "digits_tiny.yaml"),
        "--data.path", str(root), "--data.batch_size", "1", "--data.sortagrad", "false", "--data.test_split", "null",
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
        "--trainer.use_distributed_sampler", "false", "--trainer.max_epochs", "1",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path
        )
    except subprocess.TimeoutExpired as hang:
        pytest.fail(f"DDP run hung: {hang}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    assert list(tmp_path.rglob("last.ckpt"))
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses and all(math.isfinite(x) for x in losses)
    assert [
        float(r["train/skipped_undecodable"]) for r in rows if r.get("train/skipped_undecodable")
    ]
    counted = [float(r["val/utterances"]) for r in rows if r.get("val/utterances")]
    assert counted == [5.0]  # both ranks together, each utterance once


def test_sync_batchnorm_converts_every_sequence_wise_bn():
    """`trainer.sync_batchnorm: true` (GPU DDP) swaps each BN for SyncBatchNorm; PyTorch's
    SyncBatchNorm runs on GPUs only, so here we check the conversion itself."""
    from ds2hub.model import DeepSpeech2, get_preset

    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(DeepSpeech2(get_preset("tiny"), 29))
    kinds = {type(m).__name__ for m in model.modules()}
    assert "SyncBatchNorm" in kinds and "BatchNorm1d" not in kinds


def test_ddp_without_disabling_lightnings_sampler_is_a_clear_error(tiny_digits):
    from unittest.mock import MagicMock

    dm = SpeechDataModule(CharTokenizer(), str(tiny_digits))
    dm.trainer = MagicMock(world_size=2, global_rank=0)
    dm.trainer._accelerator_connector.use_distributed_sampler = True
    with pytest.raises(ValueError, match="use_distributed_sampler: false"):
        dm.train_dataloader()


def test_extra_corpora_join_the_training_split_only(corpora, tiny_digits):
    dm = SpeechDataModule(
        CharTokenizer(), str(corpora["fsdd"]), text_column="transcription", holdout_column="speaker_id",
        holdout_values=["spk0"], test_split=None, extra_train=[{"path": str(tiny_digits), "split": "train"}],
    )  # fmt: skip
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 12 + 16 and len(dm.datasets["val"]) == 4
    texts = dm.datasets["train"].data["transcription"]
    assert any(len(t.split()) > 1 for t in texts)  # the digit sequences came in


def test_a_batch_with_nothing_decodable_is_skipped_not_fatal(tiny_digits, tmp_path):
    from ds2hub.training.data import collate
    from ds2hub.training.data.dataset import is_empty_batch

    assert is_empty_batch(collate([None, None])) and collate([None])["skipped_undecodable"] == 1
    root = tmp_path / "one_bad"
    for split in ("train", "validation", "test"):
        (root / split).mkdir(parents=True)
        with open(tiny_digits / split / "metadata.csv") as f:
            rows = [(r["file_name"], r["text"]) for r in csv.DictReader(f)][:3]
        for name, _ in rows:
            (root / split / name).write_bytes((tiny_digits / split / name).read_bytes())
        (root / split / "corrupt.flac").write_bytes(_flac_truncated())  # header fine, body lost
        with open(root / split / "metadata.csv", "w", newline="") as out:
            csv.writer(out).writerows([("file_name", "text"), *rows, ("corrupt.flac", "one two")])
    cli = run_cli(
        [
            "fit", "--config", str(Path(__file__).parent / "conf" / "digits_tiny.yaml"), "--data.path", str(root),
            "--data.batch_size", "1", "--data.sortagrad", "false", "--trainer.max_epochs", "1",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
        ]
    )  # fmt: skip
    metrics = cli.trainer.callback_metrics
    assert (
        cli.trainer.state.finished and cli.trainer.global_step == 4
    )  # all four batches, one empty
    assert (
        float(metrics["train/skipped_undecodable"]) == 1
        and float(metrics["val/skipped_undecodable"]) == 1
    )
    assert torch.isfinite(metrics["val/loss"])
