"""Shared fixtures. Everything is made from data shipped in the repo; nothing touches the network."""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "recipes" / "digits"


def pytest_configure(config: pytest.Config) -> None:
    # `datasets` reads its cache folder once, when imported: set it before any test imports it,
    # so runs never share (or fill) the user's cache; the fixture below covers subprocesses.
    cache = Path(tempfile.mkdtemp(prefix="ds2hub-tests-hf-"))
    os.environ["HF_DATASETS_CACHE"] = str(cache / "datasets")
    os.environ["HF_HOME"] = str(cache / "home")
    os.environ["HF_HUB_OFFLINE"] = "1"
    config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
    # Lightning's log handler takes `sys.stderr` when Lightning is first imported: imported here,
    # it writes to the real stream, not to the capture of whichever test imported it first (which
    # pytest closes afterwards, so later tests would read "--- Logging error ---" in their stderr).
    import lightning.pytorch  # noqa: F401


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    # Keep `datasets` caches out of the user's home and make any hub access fail fast.
    cache = tmp_path_factory.getbasetemp() / "hf_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setenv("HF_HOME", str(cache / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def copy_digits(target: Path, sizes: dict[str, int]) -> Path:
    """Copies the first utterances of each split of the shipped digit corpus into `target`."""
    for split, n in sizes.items():
        (target / split).mkdir(parents=True)
        with open(DIGITS / split / "metadata.csv") as f:
            rows = list(csv.DictReader(f))[:n]
        with open(target / split / "metadata.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        for row in rows:
            shutil.copy(DIGITS / split / row["file_name"], target / split / row["file_name"])
    return target


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory) -> Path:
    """A 24-utterance audiofolder (train 16 / validation 4 / test 4) of shipped digit audio."""
    return copy_digits(tmp_path_factory.mktemp("digits"), {"train": 16, "validation": 4, "test": 4})
