"""An offline W&B run whose local files hold the metrics, tags and validation table."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ds2hub
from ds2hub.cli.main import run_cli

pytest.importorskip("wandb")
CONF = Path(__file__).parent / "conf"
DS2HUB = Path(sys.executable).parent / "ds2hub"  # the console script `pip install` made


def test_offline_wandb_run_records_metrics_and_predictions(tiny_digits, tmp_path, monkeypatch):
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no netrc: no credentials
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)  # the recipe's relative log folders land here
    cli = run_cli(
        [
            "fit", "--config", str(CONF / "digits_tiny.yaml"), "--config", str(CONF / "wandb.yaml"),
            "--data.path", str(tiny_digits), "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
            "--trainer.default_root_dir", str(tmp_path),
        ]
    )  # fmt: skip
    import wandb

    run = cli.trainer.loggers[0].experiment
    assert run.settings.mode in ("offline", "dryrun")  # dryrun is wandb's internal name for offline
    assert {"en", "tokenizer-chars"} <= set(run.tags) and any(
        t.startswith("size-") for t in run.tags
    )
    assert run.group == "digits-en"
    assert run.config["recipe"]["model"]["arch"]["rnn_hidden"] == 32
    wandb.finish()

    run_dir = next(tmp_path.rglob("offline-run-*"))
    keys = (
        b"train/loss",
        b"val/wer",
        b"val/cer",
        b"lr-SGD",
        b"train/audio_sec_per_sec",
        b"tokenizer-chars",
    )
    # wandb's service process writes the run's protobuf log asynchronously: wait (bounded) for it.
    deadline = time.monotonic() + 60
    while True:
        records = b"".join(p.read_bytes() for p in run_dir.glob("run-*.wandb"))
        if all(k in records for k in keys) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for key in keys:
        assert key in records, key

    tables = sorted(
        (run_dir / "files" / "media" / "table" / "val").glob("predictions_*.table.json")
    )
    assert tables, "no validation table"
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["epoch", "audio", "reference", "prediction", "wer"]
    with open(tiny_digits / "validation" / "metadata.csv") as f:
        references = [row["text"] for row in csv.DictReader(f)]
    assert len(table["data"]) == 3 and all(row[2] in references for row in table["data"])
    # The audio clips are staged (as WAV files) for upload with the table by `wandb sync`.
    staged = [
        p
        for p in (tmp_path / "wandb-data").rglob("*")
        if p.is_file() and p.read_bytes()[:4] == b"RIFF"
    ]
    assert len(staged) >= 3

    # The CSV logger ran beside W&B, and PushToHub wrote the hub folder at the end of fit.
    assert any(tmp_path.rglob("metrics.csv"))
    hub_folder = next(tmp_path.rglob("hub/config.json")).parent
    assert ds2hub.from_pretrained(hub_folder).tokenizer.kind == "chars"


def test_a_run_prints_no_stale_setting_warnings(tmp_path, monkeypatch, capfd):
    """Lightning's `anonymous=None` and a not-yet-made run folder made wandb print "The
    anonymous setting has no effect" and "git root ... does not exist" at every run."""
    import wandb

    from ds2hub.training.loggers import DS2WandbLogger

    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_SILENT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.chdir(tmp_path)
    logger = DS2WandbLogger(save_dir="runs/new", project="ds2hub")
    assert logger.experiment.settings.mode in ("offline", "dryrun")
    wandb.finish()
    printed = capfd.readouterr()
    assert "anonymous" not in printed.err + printed.out
    assert "git root" not in printed.err + printed.out


def test_an_offline_runs_folder_holds_its_tables_audio(tiny_digits, tmp_path):
    """The console script, offline, wandb's data folder left at its default: the validation
    table goes to `wandb sync` as an artifact whose JSON names a WAV file per clip
    (`audio-file` entries); those clips are staged in the run's own folder, so they are uploaded
    with it (staged in `~/.local/share/wandb`, outside the run, a clean-up there lost them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), WANDB_MODE="offline", WANDB_SILENT="true")
    result = subprocess.run(
        [str(DS2HUB), "fit", "--config", str(CONF / "digits_tiny.yaml"),
         "--config", str(CONF / "wandb.yaml"), "--data.path", str(tiny_digits),
         "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
         "--trainer.default_root_dir", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = [p for p in tmp_path.rglob("offline-run-*") if p.is_dir()]
    staged = [p for p in run_dir.rglob("*") if p.is_file() and "staging" in p.parts]
    clips = {
        hashlib.sha256(p.read_bytes()).hexdigest() for p in staged if p.read_bytes()[:4] == b"RIFF"
    }
    tables = [
        json.loads(p.read_text())
        for p in staged
        if p.read_bytes()[:1] == b"{" and b'"_type": "table"' in p.read_bytes()
    ]
    assert tables, f"no staged table in {run_dir}: {sorted(str(p) for p in run_dir.rglob('*'))}"
    table = tables[-1]
    audio = [row[table["columns"].index("audio")] for row in table["data"]]
    assert len(audio) == 3 and all(a["_type"] == "audio-file" for a in audio), audio
    assert all(a["path"].endswith(".wav") and a["sha256"] in clips for a in audio)
