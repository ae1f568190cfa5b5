"""Corpus layouts, SortaGrad and duration batching, bad data, recipes, DDP."""

from __future__ import annotations

import csv
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from standins import (
    make_aishell,
    make_audiofolder,
    make_commonvoice,
    make_fleurs,
    make_librispeech,
)

from ds2hub.cli.main import main, run_cli
from ds2hub.tokenizers import CharTokenizer, MandarinTokenizer
from ds2hub.training.data import SpeechDataModule
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


FRONTENDS = {
    "utterance": {},
    "peak": {"normalization": "peak"},
    "global": {"normalization": "global"},
    "mel": {"n_mels": 40, "max_frequency_hz": 4000.0},
}


@pytest.mark.parametrize("frontend", list(FRONTENDS))
def test_a_front_end_on_the_device_gives_the_features_and_masks_of_the_workers(corpora, frontend):
    """`data.frontend_on_device`: the same batch, its features computed in the step (padded
    samples in, `LogSpectrogram.batch`, the workers' SpecAugment masks) equals the workers'."""
    from ds2hub.features import FeatureConfig
    from ds2hub.training.data.augment import Noise, SpecAugment

    config = FeatureConfig(**FRONTENDS[frontend])
    batches = {}
    for on_device in (False, True):
        torch.manual_seed(3)  # the Augmenter seeds itself from the process's torch seed
        augment = [Noise(prob=0.5), SpecAugment(freq_masks=2, freq_mask_width=8, time_masks=2, time_mask_width=10)]  # fmt: skip
        dm = SpeechDataModule(CharTokenizer(), str(corpora["fsdd"]), text_column="transcription", holdout_column="speaker_id", holdout_values=["spk1"], test_split=None, batch_size=5, augment=augment, features=config, frontend_on_device=on_device)  # fmt: skip
        if config.global_stats:  # statistics, as training hands them to the DataModule
            mean, std = torch.linspace(-20, -10, config.n_bins), torch.linspace(1, 3, config.n_bins)
            dm.frontend.set_statistics(mean, std, 9)
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        assert ("samples" in batch) == on_device and ("features" in batch) != on_device
        batches[on_device] = dm.on_after_batch_transfer(batch, 0)
    workers, device = batches[False], batches[True]
    assert torch.equal(workers["feature_lengths"], device["feature_lengths"])
    assert device["features"].shape == workers["features"].shape
    torch.testing.assert_close(device["features"], workers["features"], rtol=0, atol=2e-5)
    masked = (workers["features"][:, :, 1:] == workers["features"][:, :, :-1]).all(dim=1)
    assert masked.any()  # (SpecAugment's time masks are in the batch being compared)


def test_a_front_end_on_the_device_refuses_feature_transforms_it_cannot_run(corpora):
    from ds2hub.errors import ConfigError
    from ds2hub.training.data.augment import VTLP

    with pytest.raises(ConfigError, match="only feature transform it takes is one SpecAugment"):
        SpeechDataModule(CharTokenizer(), str(corpora["fsdd"]), augment=[VTLP()], frontend_on_device=True)  # fmt: skip


def test_training_with_the_front_end_on_the_device_takes_the_same_steps(tiny_digits, tmp_path):
    """`ds2hub fit ... --data.frontend_on_device true` through the Trainer: the same losses and
    validation figures as the workers' front end (the same features, the same masks)."""
    results = []
    for on_device in ("false", "true"):
        out = tmp_path / on_device
        cli = run_cli(
            [
                "fit", "--config", str(Path(__file__).parent / "conf" / "digits_tiny.yaml"),
                "--data.path", str(tiny_digits), "--data.frontend_on_device", on_device,
                "--data.augment+=ds2hub.training.data.augment.SpecAugment",
                "--data.augment.init_args.time_masks=2", "--trainer.limit_train_batches", "3",
                "--trainer.max_epochs", "1",
                "--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir", str(out),
            ]
        )  # fmt: skip
        assert cli.datamodule.frontend_on_device == (on_device == "true")
        metrics = cli.trainer.callback_metrics
        results.append({k: float(metrics[k]) for k in ("train/loss", "val/loss", "val/cer")})
    workers, device = results
    assert device == pytest.approx(workers, rel=1e-4)
    # `ds2hub push` evaluates such a run outside the Trainer: its loader makes the features.
    (checkpoint,) = (tmp_path / "true").rglob("last.ckpt")
    hub = tmp_path / "hub"
    assert main(["push", str(checkpoint), "--repo-id", "you/x", "--dry-run", "--output-dir", str(hub)]) == 0  # fmt: skip
    card = (hub / "README.md").read_text()
    counts = [int(n) for n in re.findall(r"(\d+) utterances", card)]
    assert counts and min(counts) > 0 and not re.search(r"\bnan\b", card, re.I), card
