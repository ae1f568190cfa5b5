"""Streamed training corpora (`data.streaming: true`): shuffled and reseeded per epoch, resumable
mid-epoch, holdouts/extra corpora/duration batches, equal batch counts under DDP, W&B."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from unittest.mock import MagicMock

import datasets
import lightning as L
import pytest
from standins import digit_rows, encoded, make_audiofolder

from ds2hub.audio import SAMPLE_RATE
from ds2hub.cli.main import run_cli
from ds2hub.tokenizers import CharTokenizer, MandarinTokenizer
from ds2hub.training.data import SpeechDataModule

CONF = Path(__file__).parent / "conf"


def utterance_ids(batch: dict) -> list[tuple[str, int]]:
    """Stable ids of a batch's utterances: `indices` of a stream are positions in it, which change
    with the shuffle; transcript and duration (in samples) do not."""
    return [
        (t, round(d * SAMPLE_RATE)) for t, d in zip(batch["texts"], batch["durations"].tolist())
    ]


class RecordBatches(L.Callback):
    """Records the utterances of every training batch the model receives, per epoch."""

    def __init__(self) -> None:
        self.epochs: dict[int, list[list[tuple[str, int]]]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.epochs.setdefault(trainer.current_epoch, []).append(utterance_ids(batch))


class CountBatches(L.Callback):
    """Prints how many training batches this rank's model received (read by the DDP test)."""

    def __init__(self) -> None:
        self.count = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.count += 1

    def on_train_end(self, trainer, pl_module) -> None:
        print(f"RANK {trainer.global_rank} TRAINED ON {self.count} BATCHES", flush=True)


def make_sharded_parquet(root: Path, shard_sizes: tuple[int, ...]) -> Path:
    """A parquet corpus as on the hub whose train split is several shards of unequal size, with
    the card's `dataset_info` giving the row counts (as hub corpora such as LibriSpeech do)."""
    rows = digit_rows("train", sum(shard_sizes))
    start = 0
    for number, size in enumerate(shard_sizes):
        part = rows[start : start + size]
        start += size
        _write_parquet(root / "train" / f"{number:04d}.parquet", part, "train")
    _write_parquet(root / "validation" / "0000.parquet", digit_rows("validation", 4), "validation")
    (root / "README.md").write_text(
        "---\ndataset_info:\n  splits:\n"
        f"  - name: train\n    num_bytes: 1\n    num_examples: {sum(shard_sizes)}\n"
        "  - name: validation\n    num_bytes: 1\n    num_examples: 4\n"
        "configs:\n- config_name: default\n  data_files:\n"
        "  - split: train\n    path: train/*.parquet\n"
        "  - split: validation\n    path: validation/*.parquet\n---\n"
    )
    return root


def _write_parquet(path: Path, rows: list[dict[str, str]], split: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "audio": [{"bytes": encoded(r, split, "FLAC"), "path": r["file_name"]} for r in rows],
        "text": [r["text"] for r in rows],
    }
    features = datasets.Features(
        {"audio": datasets.Audio(sampling_rate=SAMPLE_RATE), "text": datasets.Value("string")}
    )
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(path))


@pytest.fixture(scope="module")
def fsdd(tmp_path_factory) -> Path:
    """16 utterances of four speakers (spk0..spk3) with a duration column, one train split."""
    return make_audiofolder(tmp_path_factory.mktemp("stream") / "fsdd")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """Train split in two parquet shards of 6 and 2 utterances: split by shard across two DDP
    ranks, one rank has three batches of two, the other one."""
    return make_sharded_parquet(tmp_path_factory.mktemp("stream") / "sharded", (6, 2))


def stream_module(path: Path, **kwargs) -> SpeechDataModule:
    # The stand-ins without a validation split validate on their train split (not the point here).
    kwargs = {"streaming": True, "sortagrad": False, "val_split": "train", **kwargs}
    return SpeechDataModule(CharTokenizer(), str(path), **kwargs)


def planned(dm: SpeechDataModule, epoch: int = 0) -> list[list]:
    """The utterances (undecoded) of each training batch of an epoch."""
    dataset = dm.datasets["train"]
    dataset.set_epoch(epoch)
    return list(dataset.plan())


def as_ddp_rank(dm: SpeechDataModule, rank: int, world: int = 2) -> SpeechDataModule:
    dm.trainer = MagicMock(world_size=world, global_rank=rank)
    dm.trainer._accelerator_connector.use_distributed_sampler = False
    return dm


# --- shuffling, epochs, resuming ---------------------------------------------------------------
STREAM = ["--data.streaming", "true", "--data.sortagrad", "false", "--data.batch_size", "4"]


def test_fit_shuffles_every_epoch_sees_each_utterance_once_and_resumes(
    tiny_digits, tmp_path, monkeypatch
):
    """A real `ds2hub fit` over a streamed corpus (16 utterances, 4 batches per epoch), 3 epochs,
    two DataLoader workers, W&B offline with `WandbExtras` (which must not need the durations a
    stream does not have); then a run resumed from a checkpoint written mid-epoch 1."""
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no netrc: no credentials, so W&B runs offline
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    common = ["--data.path", str(tiny_digits), *STREAM, "--data.num_workers", "2"]
    common += ["--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(tmp_path)]
    cli = run_cli(
        [
            "fit", "--config", str(CONF / "digits_tiny.yaml"), "--config", str(CONF / "wandb.yaml"),
            *common, "--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "3",
            "--trainer.callbacks+=test_streaming.RecordBatches",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.dirpath", str(tmp_path / "mid"),
            "--trainer.callbacks.every_n_train_steps", "6",  # epoch 1, after 2 of its 4 batches
            "--trainer.callbacks.save_top_k", "-1",
        ]
    )  # fmt: skip
    import wandb

    run = cli.trainer.loggers[0].experiment
    assert run.config["train_streaming"] is True and "train_hours" not in run.config
    wandb.finish()
    wandb.teardown()  # its service keeps this test's folders otherwise (test_wandb.py runs next)
    record = next(cb for cb in cli.trainer.callbacks if isinstance(cb, RecordBatches))
    epochs = [[u for batch in record.epochs[e] for u in batch] for e in range(3)]
    everything = Counter(epochs[0])
    assert sum(everything.values()) == 16 and max(everything.values()) == 1
    assert all(Counter(seen) == everything for seen in epochs)  # each utterance once per epoch
    assert len({tuple(seen) for seen in epochs}) == 3  # in a new order every epoch

    resumed = run_cli(
        [
            "fit", "--config", str(CONF / "digits_tiny.yaml"), *common,
            "--trainer.max_epochs", "2", "--ckpt_path", str(next((tmp_path / "mid").glob("*step=6*"))),
            "--trainer.callbacks+=test_streaming.RecordBatches",
        ]
    )  # fmt: skip
    rest = next(cb for cb in resumed.trainer.callbacks if isinstance(cb, RecordBatches))
    assert rest.epochs == {1: record.epochs[1][2:]}  # the batches the first run trained on next


def test_resuming_mid_epoch_skips_exactly_the_batches_already_trained(fsdd):
    """`EpochLoader` hands the checkpoint's position to the stream (`skip_batches`); with two
    workers the rest of the epoch is the uninterrupted run's, batch for batch."""
    dm = stream_module(fsdd, text_column="transcription", batch_size=2, num_workers=2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.epoch_fn = lambda: 1
    uninterrupted = [utterance_ids(b) for b in loader]
    assert len(uninterrupted) == 8
    loader.load_state_dict({"epoch": 1, "batches": 3})
    assert [utterance_ids(b) for b in loader] == uninterrupted[3:]
    assert [utterance_ids(b) for b in loader] == uninterrupted  # the resume point is used once
    loader.epoch_fn = lambda: 2
    assert [utterance_ids(b) for b in loader] != uninterrupted  # reshuffled


# --- what a stream supports, or refuses at start-up -------------------------------------------
def test_sortagrad_is_refused_at_start_up(fsdd):
    with pytest.raises(ValueError, match="data.sortagrad: false"):
        SpeechDataModule(CharTokenizer(), str(fsdd), text_column="transcription", streaming=True)


def test_holdout_values_leave_the_training_stream_and_make_the_validation_set(fsdd):
    dm = stream_module(
        fsdd, text_column="transcription", holdout_column="speaker_id",
        holdout_values=["spk1"], test_holdout_values=["spk2"],
    )  # fmt: skip
    dm.setup("fit")
    dm.setup("test")
    speakers = Counter(u.row["speaker_id"] for batch in planned(dm) for u in batch)
    assert speakers == {"spk0": 4, "spk3": 4}
    assert set(dm.datasets["val"].data["speaker_id"]) == {"spk1"}
    assert set(dm.datasets["test"].data["speaker_id"]) == {"spk2"}
    assert len(dm.datasets["val"]) == 4 and next(iter(dm.val_dataloader()))["features"].size(0)


def test_a_vocabulary_is_learned_from_the_streamed_training_data(tmp_path):
    """Held-out groups stay out of the vocabulary, as with map-style reading."""
    hsk = make_audiofolder(tmp_path / "hsk", mandarin=True)
    metadata = hsk / "metadata.csv"  # a character only the held-out speaker says
    lines = metadata.read_text(encoding="utf-8").splitlines()
    lines = [line.replace(",spk1,", "好,spk1,") for line in lines]
    metadata.write_text("\n".join(lines) + "\n", encoding="utf-8")
    held = {"holdout_column": "speaker_id", "holdout_values": ["spk1"], "test_split": None}
    kwargs = {"text_column": "transcription", "val_split": "train", **held}
    streamed = SpeechDataModule(MandarinTokenizer(), str(hsk), streaming=True, sortagrad=False, **kwargs)  # fmt: skip
    mapped = SpeechDataModule(MandarinTokenizer(), str(hsk), **kwargs)
    assert streamed.tokenizer.vocab == mapped.tokenizer.vocab and "好" not in mapped.tokenizer.vocab


def test_holdout_fraction_is_refused_at_start_up(fsdd):
    with pytest.raises(ValueError, match="full pass over the stream.*holdout_values"):
        stream_module(fsdd, text_column="transcription", holdout_column="speaker_id", holdout_fraction=0.25)  # fmt: skip


def test_extra_corpora_are_streamed_with_the_training_split(fsdd, tiny_digits):
    dm = stream_module(
        fsdd, text_column="transcription", holdout_column="speaker_id", holdout_values=["spk0"],
        extra_train=[{"path": str(tiny_digits), "split": "train"}],
    )  # fmt: skip
    dm.setup("fit")
    batches = planned(dm)
    assert sorted(len(b) for b in batches) == [12, 16]  # 12 + 16, as map-style reads them
    sources = Counter(Path(u.row["audio"]["path"]).parent.name for b in batches for u in b)
    assert sources == {"audio": 12, "train": 16}  # fsdd/audio/utt*.flac, digits/train/*.opus


def test_an_extra_corpus_slice_is_streamed_as_the_same_rows(fsdd, tiny_digits):
    """`train[:5]` (a recipe's slice of an extra corpus) streams the rows map-style reads."""
    dm = stream_module(
        fsdd, text_column="transcription", holdout_column="speaker_id", holdout_values=["spk0"],
        extra_train=[{"path": str(tiny_digits), "split": "train[2:7]"}],
    )  # fmt: skip
    dm.setup("fit")
    streamed = Counter(
        Path(u.row["audio"]["path"]).name for b in planned(dm) for u in b
        if Path(u.row["audio"]["path"]).parent.name == "train"
    )  # fmt: skip
    mapped = SpeechDataModule(CharTokenizer(), str(tiny_digits), train_split="train[2:7]")
    mapped.setup("fit")
    rows = mapped.datasets["train"]
    assert sorted(streamed) == sorted(Path(a["path"]).name for a in rows.data["audio"])
    assert all(n == 1 for n in streamed.values())


@pytest.mark.parametrize("split", ["train[:10%]", "train[-5:]", "train[3]"])
def test_a_stream_slice_it_cannot_take_is_refused_at_start_up(fsdd, tiny_digits, split):
    dm = stream_module(
        fsdd, text_column="transcription", holdout_column="speaker_id", holdout_values=["spk0"],
        extra_train=[{"path": str(tiny_digits), "split": split}],
    )  # fmt: skip
    with pytest.raises(ValueError, match="absolute rows"):
        dm.setup("fit")


def test_duration_batches_keep_the_padded_budget(fsdd):
    dm = stream_module(fsdd, text_column="transcription", max_batch_seconds=6.0, max_duration=3.0)
    dm.setup("fit")
    batches = planned(dm)
    assert sum(len(b) for b in batches) == 16 and len(batches) > 16 / dm.batch_size
    assert all(max(u.seconds for u in b) * len(b) <= 6.0 for b in batches)
    with pytest.raises(ValueError, match="max_batch_seconds=2.0 is shorter than max_duration"):
        stream_module(fsdd, max_batch_seconds=2.0, max_duration=3.0)


# --- DDP --------------------------------------------------------------------------------------
def test_ddp_ranks_get_the_same_number_of_batches(sharded):
    """Split by shard, rank 0 holds 6 utterances and rank 1 holds 2; both make
    ceil(8 / (2 ranks x 2)) = 2 batches, rank 1 by passing over its shard twice."""
    plans = []
    for rank in (0, 1):
        dm = as_ddp_rank(stream_module(sharded, batch_size=2), rank)
        dm.setup("fit")
        plans.append([[u.row["text"] for u in batch] for batch in planned(dm)])
    assert [len(p) for p in plans] == [2, 2]
    assert not {t for b in plans[0] for t in b} & {t for b in plans[1] for t in b}
    assert len({t for b in plans[0] for t in b}) == 4  # rank 0: 4 of its 6, none twice
    assert set(plans[1][0]) == set(plans[1][1]) and len(set(plans[1][0])) == 2  # its shard, twice


def test_ddp_refuses_a_stream_of_unknown_length_at_start_up(tmp_path):
    # A corpus `datasets` has never prepared: no row count cached, none on a card.
    fsdd = make_audiofolder(tmp_path / "fsdd")
    dm = as_ddp_rank(stream_module(fsdd, text_column="transcription"), 0)
    with pytest.raises(ValueError, match="set data.stream_batches_per_epoch"):
        dm.setup("fit")
    dm = as_ddp_rank(stream_module(fsdd, text_column="transcription", stream_batches_per_epoch=3), 1)  # fmt: skip
    dm.setup("fit")
    assert len(planned(dm)) == 3


def test_two_process_ddp_stream_with_uneven_shards_finishes(sharded, tmp_path):
    """Real DDP (gloo) over the uneven shards: without equal batch counts one rank would wait
    forever in the gradient all-reduce (the timeout turns a hang into a failure)."""
    cmd = [
        sys.executable, "-m", "ds2hub", "fit", "--config", str(CONF / "digits_tiny.yaml"),
        "--data.path", str(sharded), "--data.streaming", "true", "--data.sortagrad", "false",
        "--data.batch_size", "2", "--trainer.max_epochs", "2",
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
        "--trainer.use_distributed_sampler", "false", "--trainer.limit_val_batches", "1",
        "--trainer.callbacks+=test_streaming.CountBatches",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
    ]  # fmt: skip
    # The ranks import `CountBatches` from this folder (and ds2hub as the tests do).
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    counts = dict(re.findall(r"RANK (\d) TRAINED ON (\d+) BATCHES", output))
    assert counts == {"0": "4", "1": "4"}, output[-3000:]  # 2 batches x 2 epochs on each rank
