"""The package as a user installs it: build the wheel, install it (core only, no extras) into a
fresh virtual environment outside the checkout, and run recipes by name from another folder; and,
in a second such environment, the wheel plus the German plugin's wheel (`plugins/ds2hub-german`):
its recipes are listed, and its fine-tuning recipe starts from an English model made there.

Slow (wheel builds, environments of torch & co. — hard links from uv's cache keep each to seconds —
and a few short trainings; about two minutes in all), so marked `slow`; `.ci/run` runs it after the
default suite. The plugin's dependency outside uv.lock (num2words) comes from the package index.
"""

from __future__ import annotations

import csv
import json
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
GERMAN_PLUGIN = REPO / "plugins" / "ds2hub-german"
GERMAN_WORDS = dict(
    zip(
        "zero one two three four five six seven eight nine".split(),
        "null eins zwei drei vier fünf sechs sieben acht neun".split(),
    )
)


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


def fresh_venv(root: Path, *wheels: Path) -> Path:
    """A new environment in `root` (outside the checkout) with the locked versions of ds2hub's core
    dependencies and the `wheels`, installed one after the other as a user would; none of the
    extras."""
    pins = uv("export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project")
    assert pins.returncode == 0, pins.stderr
    (root / "constraints.txt").write_text(pins.stdout)
    assert uv("venv", "-q", "--python", sys.executable, str(root / "venv")).returncode == 0
    python = root / "venv" / "bin" / "python"
    install = ["pip", "install", "--python", str(python), "-c", str(root / "constraints.txt")]
    for wheel in wheels:
        result = uv(*install, "--offline", str(wheel))  # in uv's cache after `uv sync`
        if result.returncode != 0:  # a dependency that is not (the plugin's num2words)
            result = uv(*install, str(wheel))
        assert result.returncode == 0, result.stderr[-3000:]
    return root / "venv"


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """ds2hub's wheel alone, core only."""
    return fresh_venv(tmp_path_factory.mktemp("fresh"), wheel)


@pytest.fixture(scope="module")
def german_venv(wheel, tmp_path_factory) -> Path:
    """ds2hub's wheel, then the German plugin's wheel built from `plugins/ds2hub-german` (not an
    editable install: what `pip install plugins/ds2hub-german` does)."""
    out = tmp_path_factory.mktemp("plugin-dist")
    result = uv("build", "--wheel", "--out-dir", str(out), str(GERMAN_PLUGIN))
    assert result.returncode == 0, result.stderr[-3000:]
    (plugin,) = out.glob("ds2hub_german-*.whl")
    return fresh_venv(tmp_path_factory.mktemp("fresh-german"), wheel, plugin)


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
    tts = {n for n in names if n.startswith("ds2hub/recipes/tts_digits/") and n.endswith(".opus")}
    assert len(tts) == len(list((REPO / "recipes" / "tts_digits").glob("*/*.opus")))
    assert "ds2hub/recipes/tts_digits/train/metadata.csv" in names
    assert "ds2hub/model_cards/ds2hub.md" in names
    demo = "ds2hub/pretrained/digits-demo/"
    for name in ("config.json", "model.safetensors", "ds2hub_tokenizer.json", "README.md"):
        assert demo + name in names
    assert demo + ".ds2hub-export" not in names  # push's bookkeeping, not the model's
    licences = {Path(n).name for n in names if ".dist-info/licenses/" in n}
    assert {"LICENSE", "NOTICE"} <= licences
    assert not any(n.startswith("tests/") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: torch<2.16,>=2.10" in text
    assert not [line for line in text.splitlines() if "Requires-Dist: torchaudio" in line]
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

    # The README's first example: the demo model shipped in the wheel, by its name, on a test
    # clip shipped there too.
    (clips,) = venv.glob("lib/python*/site-packages/ds2hub/recipes/digits/test")
    with open(clips / "metadata.csv") as f:
        row = next(csv.DictReader(f))
    said = run(
        venv,
        "ds2hub",
        "transcribe",
        "--model",
        "digits-demo",
        str(clips / row["file_name"]),
        cwd=work,
    )
    assert said.returncode == 0, said.stderr[-3000:]
    assert said.stdout.strip() == f"{clips / row['file_name']}\t{row['text']}"

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


@pytest.mark.slow
def test_a_plain_pip_install_of_every_extra_runs_help_a_fit_by_recipe_name_and_a_transcription(
    wheel, tmp_path
):
    """What the README's pip line does, without uv and without pinned versions: a new venv,
    `pip install "ds2hub[all]"` resolved from the package index as pip resolves it, then the
    console script outside the checkout. (With torchaudio, pip paired torch with a torchaudio
    built for another release and every command failed at import.)"""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", f"{wheel}[all]"],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    versions = run(venv, "python", "-c", "import torch; print(torch.__version__)", cwd=work)
    print("pip installed torch", versions.stdout.strip())  # shown with -s

    usage = run(venv, "ds2hub", "--help", cwd=work)
    assert usage.returncode == 0 and "fit" in usage.stdout, usage.stderr[-3000:]
    fit = run(
        venv, "ds2hub", "fit", "--config", "digits", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--data.num_workers", "0", cwd=work,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    (checkpoint,) = (work / "runs" / "digits").rglob("last.ckpt")
    audio = REPO / "recipes" / "digits" / "test" / "test_0000.opus"
    said = run(
        venv, "ds2hub", "transcribe", "--model", str(checkpoint), "--format", "json", str(audio),
        cwd=work,
    )  # fmt: skip
    assert said.returncode == 0, said.stderr[-3000:]
    (result,) = [json.loads(line) for line in said.stdout.splitlines()]
    assert result["file"] == str(audio) and isinstance(result["text"], str)


def german_standin(root: Path) -> Path:
    """The corpus layout `python -m ds2hub_german.make_corpus` writes
    (`{train,validation,test}/metadata.jsonl` + `.opus`), made from ds2hub's shipped digit audio
    with the German words for the digits (no espeak-ng needed; the acoustics do not matter here)."""
    for split, n in {"train": 8, "validation": 4, "test": 4}.items():
        (root / split).mkdir(parents=True)
        with open(REPO / "recipes" / "digits" / split / "metadata.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))[:n]
        with open(root / split / "metadata.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                shutil.copy(REPO / "recipes" / "digits" / split / row["file_name"], root / split)
                text = " ".join(GERMAN_WORDS[w] for w in row["text"].split())
                f.write(json.dumps({"file_name": row["file_name"], "text": text}) + "\n")
    return root


@pytest.mark.slow
def test_a_fresh_environment_with_the_german_plugin_fine_tunes_the_english_model_by_name(
    german_venv, tmp_path
):
    """The resolve condition of the recipe hub, as a user goes: install ds2hub and the plugin,
    find the plugin's recipes, make the English digits model (`fit`, then `push` to a folder),
    and fine-tune it on German by recipe name; the result's card names the English model."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = "import ds2hub_german; print(ds2hub_german.__file__)"
    where = run(german_venv, "python", "-c", code, cwd=work)  # the wheel's copy, not the checkout's
    assert where.returncode == 0 and where.stdout.startswith(str(german_venv)), where.stderr

    listing = run(german_venv, "ds2hub", "recipes", "--strict", cwd=work)
    assert listing.returncode == 0 and "warning" not in listing.stderr, listing.stderr
    rows = {line.split()[0]: line.split(maxsplit=2) for line in listing.stdout.splitlines()[1:]}
    for name in ("german_digits", "german_digits_finetune"):
        recipe = GERMAN_PLUGIN / "ds2hub_german" / "recipes" / f"{name}.yaml"
        first_line = recipe.read_text(encoding="utf-8").splitlines()[0]
        assert name in rows, f"the plugin's recipe {name} is not listed:\n{listing.stdout}"
        assert rows[name] == [name, "ds2hub_german", first_line.removeprefix("# ")]
    assert "digits" in rows  # ds2hub's own recipes are still there

    # The English model, as the plugin's README makes it (a few steps instead of 8 epochs).
    english = run(
        german_venv, "ds2hub", "fit", "--config", "digits", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--data.num_workers", "0", cwd=work,
    )  # fmt: skip
    assert english.returncode == 0, english.stderr[-3000:]
    (checkpoint,) = (work / "runs" / "digits").rglob("last.ckpt")
    push = run(
        german_venv, "ds2hub", "push", str(checkpoint), "--repo-id", "you/ds2-digits",
        "--dry-run", "--no-eval", "--output-dir", "english-digits", cwd=work,
    )  # fmt: skip
    assert push.returncode == 0, push.stderr[-3000:]

    # German, by recipe name; its data.path (german-digits) is read from the working folder.
    german_standin(work / "german-digits")
    source = str(work / "english-digits")
    german = run(
        german_venv, "ds2hub", "fit", "--config", "german_digits_finetune",
        "--model.finetune.source", source, "--trainer.max_steps", "2",
        "--trainer.val_check_interval", "1.0", "--trainer.limit_val_batches", "1",
        "--trainer.log_every_n_steps", "1", "--data.num_workers", "0", cwd=work,
    )  # fmt: skip
    assert german.returncode == 0, german.stderr[-3000:]
    assert f"fine-tuning from {source}: conv and recurrent layers copied" in german.stderr
    assert "wandb is not installed: this run logs to CSV only" in german.stderr
    (metrics,) = (work / "runs" / "german_digits_finetune").rglob("metrics.csv")
    assert {"train/loss", "val/wer"} <= set(metrics.read_text().splitlines()[0].split(","))
    (checkpoint,) = (work / "runs" / "german_digits_finetune").rglob("last.ckpt")
    push = run(
        german_venv, "ds2hub", "push", str(checkpoint), "--repo-id", "you/ds2-german-digits",
        "--language", "de", "--dry-run", "--no-eval", "--output-dir", "german-model", cwd=work,
    )  # fmt: skip
    assert push.returncode == 0, push.stderr[-3000:]
    assert f"Fine-tuned from `{source}`" in (work / "german-model" / "README.md").read_text()

    # The English conv and GRU weights really are the start: frozen for the recipe's first 50
    # steps, they are still equal after 2; the output layer is German (33 characters, not 29).
    compare = (
        "import ds2hub, torch; "
        "en, de = (dict(ds2hub.from_pretrained(p).model.named_parameters()) "
        "for p in ('english-digits', 'german-model')); "
        "body = [n for n in en if n.startswith(('conv.', 'rnns.'))]; "
        "print(len(body), all(torch.equal(en[n], de[n]) for n in body), "
        "len(en['output.bias']), len(de['output.bias']))"
    )
    same = run(german_venv, "python", "-c", compare, cwd=work)
    assert same.returncode == 0, same.stderr[-3000:]
    n_body, equal, n_english, n_german = same.stdout.split()
    assert int(n_body) > 0 and equal == "True" and (n_english, n_german) == ("29", "33")


def test_import_ds2hub_imports_no_extra():
    code = (
        "import sys, ds2hub, ds2hub.cli.main, ds2hub.tokenizers.pinyin; "
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

    from ds2hub.training import loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert isinstance(loggers.wandb_if_installed(save_dir=str(tmp_path)), loggers.DS2WandbLogger)
    monkeypatch.setattr(loggers, "wandb_installed", lambda: False)
    assert isinstance(loggers.wandb_if_installed(save_dir=str(tmp_path)), DummyLogger)
    assert "wandb is not installed: this run logs to CSV only" in caplog.text
