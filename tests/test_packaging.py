"""The package as a user installs it: build the wheel, install it (core only, no extras) into a
fresh virtual environment outside the checkout, and run recipes by name from another folder.

Slow (a wheel build and an environment of torch & co.; hard links from uv's cache keep it to about
a minute), so it is marked `slow`; `.ci/run` runs it after the default suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from standins import make_audiofolder

REPO = Path(__file__).resolve().parents[1]
EXTRAS_ONLY = ("jieba", "pypinyin", "wandb")


def uv(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    if shutil.which("uv") is None:
        pytest.fail("the packaging test needs `uv` on PATH (pip install uv)")
    # Hard links from uv's cache: a copy of torch and its CUDA libraries would take minutes.
    env = {**os.environ, "UV_LINK_MODE": "hardlink"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        ["uv", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = uv("build", "--wheel", "--out-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = out.glob("ds2hub-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh environment (outside the checkout) with the wheel and the locked versions of its
    core dependencies; none of the extras."""
    root = tmp_path_factory.mktemp("fresh")
    pins = uv("export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project")
    assert pins.returncode == 0, pins.stderr
    (root / "constraints.txt").write_text(pins.stdout)
    assert uv("venv", "-q", "--python", sys.executable, str(root / "venv")).returncode == 0
    python = root / "venv" / "bin" / "python"
    install = ["pip", "install", "--python", str(python), "-c", str(root / "constraints.txt")]
    result = uv(*install, "--offline", str(wheel))  # everything is in uv's cache after `uv sync`
    if result.returncode != 0:
        result = uv(*install, str(wheel))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "venv"


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HOME=str(cwd / "hf"))
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_the_wheel_ships_recipes_their_data_the_card_template_and_the_licences(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in (REPO / "recipes").glob("*.yaml"):
        assert f"ds2hub/recipes/{recipe.name}" in names
    assert "ds2hub/recipes/digits/train/metadata.csv" in names
    shipped = {n for n in names if n.startswith("ds2hub/recipes/digits/") and n.endswith(".opus")}
    assert len(shipped) == len(list((REPO / "recipes" / "digits").glob("*/*.opus")))
    assert "ds2hub/model_cards/ds2hub.md" in names
    licences = {Path(n).name for n in names if ".dist-info/licenses/" in n}
    assert {"LICENSE", "NOTICE"} <= licences
    assert not any(n.startswith("tests/") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: torch<2.12,>=2.10" in text
    assert "Provides-Extra: mandarin" in text and "Provides-Extra: wandb" in text
    assert "License-Expression: Apache-2.0" in text
    entry_points = zipfile.ZipFile(wheel).read(metadata.replace("METADATA", "entry_points.txt"))
    assert b"[ds2hub.recipes]\nds2hub = ds2hub" in entry_points


@pytest.mark.slow
def test_a_fresh_environment_runs_recipes_by_name_without_any_extra(venv, tmp_path):
    work = tmp_path / "elsewhere"  # not the checkout: recipes and their data come from the wheel
    work.mkdir()
    check = run(
        venv, "python", "-c",
        "import importlib.util, sys, ds2hub; "
        f"print(sorted(m for m in {EXTRAS_ONLY!r} if m in sys.modules or importlib.util.find_spec(m)))",
        cwd=work,
    )  # fmt: skip
    assert check.returncode == 0 and check.stdout.strip() == "[]", check.stderr[-2000:]

    listing = run(venv, "ds2hub", "recipes", "--paths", cwd=work)
    assert listing.returncode == 0 and "warning" not in listing.stderr, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert set(rows) == {p.stem for p in (REPO / "recipes").glob("*.yaml")}
    assert str(venv) in rows["digits"] and "Demo: English spoken digit" in rows["digits"]

    fit = run(
        venv, "ds2hub", "fit", "--config", "digits", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.log_every_n_steps", "1", "--data.num_workers", "0", cwd=work,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "wandb is not installed: this run logs to CSV only" in fit.stderr
    (metrics,) = (work / "runs" / "digits").rglob("metrics.csv")
    header = metrics.read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/wer"} <= set(header)
    assert list((work / "runs" / "digits").rglob("last.ckpt"))

    # A Mandarin recipe without the `mandarin` extra: one line naming it, status 2.
    corpus = make_audiofolder(tmp_path / "hsk", mandarin=True)
    mandarin = run(
        venv, "ds2hub", "fit", "--config", "hsk_words", "--data.path", str(corpus),
        "--trainer.fast_dev_run", "1", "--data.num_workers", "0", cwd=work,
    )  # fmt: skip
    assert mandarin.returncode == 2, mandarin.stderr[-3000:]
    assert mandarin.stderr.strip().splitlines()[-1] == (
        "ds2hub: error: pypinyin is not installed; it comes with the `mandarin` extra: "
        "pip install 'ds2hub[mandarin]'"
    )


def test_import_ds2hub_imports_no_extra():
    code = (
        "import sys, ds2hub, ds2hub.cli, ds2hub.tokenizers.pinyin; "
        f"print(sorted(m for m in {EXTRAS_ONLY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]


def test_a_missing_extra_is_named_when_the_feature_is_used(monkeypatch, tmp_path):
    from ds2hub.extras import MissingExtra, require
    from ds2hub.tokenizers import PinyinTokenizer

    monkeypatch.setitem(sys.modules, "pypinyin", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "pypinyin.pinyin_dict", None)
    tokenizer = PinyinTokenizer(output="pinyin")  # building it needs nothing yet
    with pytest.raises(MissingExtra, match=r"pip install 'ds2hub\[mandarin\]'"):
        tokenizer.encode("学生")
    # A broken dependency *of* an installed extra is shown as it is, not as a missing extra.
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(MissingExtra, match=r"ds2hub\[wandb\]"):
        require("wandb", "wandb")
    (tmp_path / "half_installed.py").write_text("import a_dependency_nobody_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_nobody_installed") as error:
        require("half_installed", "mandarin")
    assert not isinstance(error.value, MissingExtra)


def test_recipes_log_to_wandb_only_when_it_is_installed(monkeypatch, tmp_path, caplog):
    from lightning.pytorch.loggers.logger import DummyLogger

    from ds2hub import loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert isinstance(loggers.wandb_if_installed(save_dir=str(tmp_path)), loggers.DS2WandbLogger)
    monkeypatch.setattr(loggers, "wandb_installed", lambda: False)
    assert isinstance(loggers.wandb_if_installed(save_dir=str(tmp_path)), DummyLogger)
    assert "wandb is not installed: this run logs to CSV only" in caplog.text
