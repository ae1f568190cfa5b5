"""Smoke harness: every recipe, of ds2hub and of every installed plugin, runs one training and one
validation batch (`fast_dev_run`) on a generated stand-in of its corpus layout, with a tiny model.

A recipe that no longer parses, names a class that does not exist, or breaks on its data layout
fails here under its own name (`test_recipe_runs[<name>]`). Stand-ins are made from the shipped
digit audio by `tests/standins.py`; the layout is read from the recipe (see `standin_for`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from conftest import copy_digits
from standins import make_aishell, make_audiofolder, make_commonvoice, make_fleurs, make_librispeech

from ds2hub.cli.main import run_cli
from ds2hub.cli.recipes import Recipe, find_recipes
from ds2hub.features import FeatureConfig
from ds2hub.inference.recognizer import SpeechRecognizer
from ds2hub.tokenizers import CharTokenizer
from ds2hub.training.data.corpora import available_layouts

CATALOG = find_recipes()
CLASHING = set(CATALOG.clashes())
RECIPES = {(r.qualified if r.name in CLASHING else r.name): r for r in CATALOG.recipes}
MANDARIN = re.compile(r"Mandarin|Pinyin")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

# Stand-in makers by layout name: (root folder) -> the corpus folder.
STANDINS: dict[str, Callable[[Path], Path]] = {
    "splits": lambda root: copy_digits(root, {"train": 8, "validation": 4, "test": 4}),
    "audiofolder": make_audiofolder,
    "audiofolder-mandarin": lambda root: make_audiofolder(root, mandarin=True),
    "aishell": make_aishell,
    "commonvoice": make_commonvoice,
    "librispeech": make_librispeech,
    "fleurs": make_fleurs,
}


def standin_for(config: dict, root: Path) -> tuple[str, list[str]]:
    """The stand-in layout a recipe's `data` section describes, and the options that point the
    recipe's own settings (split names, text column, held-out values) at that stand-in.

    - `data.layout` (a release-folder layout): that layout; a plugin's own layout brings its
      stand-in as the `make_standin(root) -> Path` attribute of its loader.
    - a hub dataset (`data.name`/`data.data_dir`, or an `owner/name` path that is not a folder
      shipped beside the recipes, `root`): a parquet copy
      (LibriSpeech's configs and splits; FLEURS for `data_dir`).
    - a local audiofolder with held-out speakers or words (`holdout_column`): one metadata.csv
      with `transcription` and `speaker_id`; Mandarin text for Mandarin/pinyin tokenizers.
    - anything else: an audiofolder with train/validation/test folders (the digits layout).
    """
    data = config.get("data") or {}
    mandarin = bool(MANDARIN.search(str((data.get("tokenizer") or {}).get("class_path", ""))))
    if data.get("layout"):
        return str(data["layout"]), []
    if data.get("data_dir"):
        return "fleurs", []
    path = str(data.get("path", ""))
    if data.get("name") or (_HUB_ID.match(path) and not (root / path).exists()):
        return "librispeech", []
    if data.get("holdout_column"):
        args = ["--data.text_column", "transcription"]
        if data.get("holdout_values"):
            args += ["--data.holdout_values", "[spk0]"]
        if data.get("test_holdout_values"):
            args += ["--data.test_holdout_values", "[spk1]"]
        return ("audiofolder-mandarin" if mandarin else "audiofolder"), args
    return "splits", ["--data.text_column", "text"]


def tiny_model(config: dict) -> list[str]:
    """Options that shrink the recipe's network to a few thousand parameters, keeping its shape
    (number of conv layers, RNN type, direction, strides)."""
    arch = (config.get("model") or {}).get("arch") or {}
    n_conv = len(arch.get("conv_channels") or [32, 32])
    args = ["--model.arch.conv_channels", str([4] * n_conv)]
    args += ["--model.arch.rnn_layers", "1", "--model.arch.rnn_hidden", "16"]
    if arch.get("fc_hidden"):
        args += ["--model.arch.fc_hidden", "16"]
    if (config.get("model") or {}).get("beam_search"):
        args += ["--model.beam_search.beam_size", "4"]
    return args


def finetune_standin(config: dict, tiny: list[str], root: Path) -> list[str]:
    """For a recipe with `model.finetune`: a model to start from, saved with `save_pretrained`,
    with the recipe's front end and the network `tiny` shrinks it to (English characters, so the
    output layer is replaced as for a new language)."""
    if not (config.get("model") or {}).get("finetune"):
        return []
    arch = dict((config.get("model") or {}).get("arch") or {})
    for option, value in zip(tiny[::2], tiny[1::2]):
        if option.startswith("--model.arch."):
            arch[option.removeprefix("--model.arch.")] = yaml.safe_load(value)
    features = FeatureConfig(**((config.get("data") or {}).get("features") or {}))
    arch["n_features"] = features.n_bins
    source = SpeechRecognizer(arch=arch, features=features.to_dict(), tokenizer=CharTokenizer())
    source.save_pretrained(root / "finetune-source")
    return ["--model.finetune.source", str(root / "finetune-source")]


def smoke_args(
    recipe: Recipe, corpus: Path, tiny_digits: Path, layout_args: list[str]
) -> list[str]:
    config = yaml.safe_load(recipe.path.read_text(encoding="utf-8"))
    args = ["fit", "--config", recipe.qualified, "--data.path", str(corpus), *layout_args]
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto"]
    args += ["--trainer.precision", "32-true", "--trainer.fast_dev_run", "1"]
    args += ["--data.num_workers", "0", "--data.batch_size", "2", *tiny_model(config)]
    extra = (config.get("data") or {}).get("extra_train")
    if extra:  # extra corpora point at the tiny digits copy, keeping each entry's other settings
        entries = []
        for entry in extra:
            entry = copy.deepcopy(entry)
            entry.update(path=str(tiny_digits), text_column="text")
            entries.append(entry)
        args += ["--data.extra_train", yaml.safe_dump(entries, default_flow_style=True).strip()]
    return args


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    made: dict[str, Path] = {}

    def get(layout: str) -> Path:
        if layout not in made:
            maker = STANDINS.get(layout) or getattr(
                available_layouts().get(layout), "make_standin", None
            )
            if maker is None:
                pytest.fail(
                    f"no stand-in for the corpus layout {layout!r}: a plugin that adds a layout "
                    "gives its loader a `make_standin(root) -> Path` attribute (CONTRIBUTING.md)"
                )
            made[layout] = maker(tmp_path_factory.mktemp(layout) / "corpus")
        return made[layout]

    return get


def test_the_catalog_has_every_recipe_of_ds2hub_and_no_problems():
    ds2hub_recipes = {r.name for r in CATALOG.recipes if r.package == "ds2hub"}
    shipped = {p.stem for p in (Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")}
    assert ds2hub_recipes == shipped
    assert not CATALOG.problems, "\n".join(map(str, CATALOG.problems))
    for recipe in CATALOG.recipes:
        assert recipe.description, f"recipe {recipe.qualified} has no first `# ` description line"


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_logs_to_wandb_only_when_it_is_installed(name):
    """W&B is an extra: a recipe names it through `wandb_if_installed`, never a W&B logger class,
    which would stop a core-only install at start-up."""
    loggers = (yaml.safe_load(RECIPES[name].path.read_text()).get("trainer") or {}).get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        path = logger.get("class_path", "") if isinstance(logger, dict) else str(logger)
        assert (
            "wandb" not in path.lower() or path == "ds2hub.training.loggers.wandb_if_installed"
        ), f"recipe {name} logs with {path}: use ds2hub.training.loggers.wandb_if_installed"


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_runs(name, standins, tiny_digits, tmp_path, monkeypatch):
    recipe = RECIPES[name]
    monkeypatch.chdir(tmp_path)  # the recipe's runs/ folder lands here
    config = yaml.safe_load(recipe.path.read_text(encoding="utf-8"))
    layout, layout_args = standin_for(config, recipe.root)
    args = smoke_args(recipe, standins(layout), tiny_digits, layout_args)
    args += finetune_standin(config, tiny_model(config), tmp_path)
    try:
        cli = run_cli(args)
    except (Exception, SystemExit) as error:  # SystemExit: jsonargparse rejected the recipe
        raise AssertionError(
            f"recipe {recipe.qualified} ({recipe.path}) fails on a stand-in of its "
            f"{layout!r} corpus: {type(error).__name__}: {error}"
        ) from error
    assert cli.trainer.state.finished, f"recipe {recipe.qualified} did not finish"
    loss = cli.trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss), f"recipe {recipe.qualified}: train/loss {loss}"
