"""The recipe catalog: ds2hub's recipes and those of installed plugins, by name.

A package offers recipes through the `ds2hub.recipes` entry-point group (docs/guide/plugins.md):
the `*.yaml` files of its `recipes/` resource folder, named by file stem (`digits`), or by
`package:stem` (`ds2hub:digits`) when two packages use the same stem; a recipe's description is
its first `# ` comment line. ds2hub's own recipes are the wheel's `ds2hub/recipes/`, or `recipes/`
beside the package in a source checkout. Plugins that fail to import, names used twice and
recipes that do not parse are reported (`Catalog.problems`) while the others are listed.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import sys
from dataclasses import dataclass, field
from importlib.abc import Traversable
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import yaml

from ds2hub.arguments import ArgumentParser
from ds2hub.cli.args import config_options
from ds2hub.errors import ConfigError
from ds2hub.plugins import (
    BUILTIN_SOURCE,
    RECIPES,
    PluginProblem,
    load_entry_point,
    registry_problems,
    source_of,
)

RECIPE_FOLDER = "recipes"
BUILTIN_PACKAGE = "ds2hub"


@dataclass(frozen=True)
class Recipe:
    """One recipe file of one package."""

    name: str  # the file stem: `digits`
    package: str  # the package that ships it: `ds2hub`, `ds2hub_german`
    path: Path  # the YAML file
    description: str  # its first `# ` comment line

    @property
    def qualified(self) -> str:
        """`package:name`, unique even when two packages ship the same name."""
        return f"{self.package}:{self.name}"

    @property
    def root(self) -> Path:
        """The folder that holds the package's `recipes/` folder: a named recipe's relative
        `data.path` is read from here (`recipes/digits` -> the shipped digits corpus)."""
        return self.path.parent.parent


@dataclass
class Catalog:
    """Every recipe found, and what could not be used."""

    recipes: list[Recipe] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)

    def clashes(self) -> dict[str, list[Recipe]]:
        """Names shipped by more than one package."""
        by_name: dict[str, list[Recipe]] = {}
        for recipe in self.recipes:
            by_name.setdefault(recipe.name, []).append(recipe)
        return {name: found for name, found in by_name.items() if len(found) > 1}

    def find(self, name: str) -> Recipe | None:
        """The recipe called `name` or `package:name`; None if there is none.

        Raises:
            ConfigError: a bare name that two packages ship (the message names both).
        """
        package, _, stem = name.rpartition(":")
        found = [r for r in self.recipes if r.name == stem and package in ("", r.package)]
        if len(found) > 1:
            options = " or ".join(r.qualified for r in found)
            raise ConfigError(f"recipe name {stem!r} is ambiguous: use {options}")
        return found[0] if found else None


def describe(text: str) -> str:
    """The first `# ` comment line of a recipe (its one-line description), or ''."""
    return next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "")


def recipe_folder(package: ModuleType) -> Traversable | None:
    """The `recipes/` resource folder of a package, if it has one (ds2hub's: see the module doc)."""
    folder = importlib.resources.files(package) / RECIPE_FOLDER
    if folder.is_dir():
        return folder
    if package.__name__ == BUILTIN_PACKAGE and package.__file__:
        checkout = Path(package.__file__).resolve().parents[1] / RECIPE_FOLDER
        if checkout.is_dir():
            return checkout
    return None


def read_recipes(package: ModuleType, catalog: Catalog, source: str) -> None:
    """Adds the recipes of `package` to `catalog`; one that does not parse becomes a problem."""
    folder = recipe_folder(package)
    if folder is None:
        message = f"has no {RECIPE_FOLDER}/ folder"
        catalog.problems.append(PluginProblem(RECIPES, package.__name__, source, message))
        return
    # Resource folders of installed packages are plain directories (wheels are unpacked); a
    # zipped package could not be run by LightningCLI anyway.
    for path in sorted(Path(str(folder)).glob("*.yaml")):
        if not path.is_file():
            continue
        name = path.stem
        try:
            text = path.read_text(encoding="utf-8")
            config = yaml.safe_load(text)
            if not isinstance(config, dict):
                raise ValueError("the file is not a YAML mapping of settings")
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as error:
            message = " ".join(f"does not parse ({error})".split())
            catalog.problems.append(
                PluginProblem(RECIPES, f"{package.__name__}:{name}", source, message)
            )
            continue
        catalog.recipes.append(Recipe(name, package.__name__, path, describe(text)))


def find_recipes() -> Catalog:
    """The recipes of every package in the `ds2hub.recipes` group, ds2hub's own first."""
    catalog = Catalog()
    seen: set[str] = set()
    for ep in sorted(entry_points(group=RECIPES), key=lambda ep: source_of(ep) != BUILTIN_SOURCE):
        source = source_of(ep)
        package, problem = load_entry_point(RECIPES, ep)
        if problem is not None:
            catalog.problems.append(problem)
            continue
        if not isinstance(package, ModuleType):
            message = f"{ep.value} is not a package"
            catalog.problems.append(PluginProblem(RECIPES, ep.name, source, message))
            continue
        if package.__name__ in seen:
            continue
        seen.add(package.__name__)
        read_recipes(package, catalog, source)
    for name, found in catalog.clashes().items():
        message = f"name used twice ({' and '.join(r.qualified for r in found)}): use package:name"
        catalog.problems.append(PluginProblem(RECIPES, name, found[-1].package, message))
    return catalog


_NAME = re.compile(r"^[\w.-]+(:[\w.-]+)?$")
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def _shipped(recipe: Recipe, path: object) -> str | None:
    """`path` made absolute if it is relative and lies in the recipe's package, else None (hub
    ids, corpora the user downloads, absolute paths)."""
    if not isinstance(path, str) or Path(path).is_absolute() or path.startswith("~"):
        return None
    local = recipe.root / path
    return str(local) if local.exists() else None


def shipped_data_options(recipe: Recipe) -> list[str]:
    """Options that point a named recipe's relative data paths into its package, so it runs from
    any folder: `--data.path` (`recipes/digits` -> `<site-packages>/ds2hub/recipes/digits`) and
    `--data.extra_train` with each shipped corpus's path made absolute (FSDD's synthetic voices)."""
    config = yaml.safe_load(recipe.path.read_text(encoding="utf-8")) or {}
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict):
        return []
    options = []
    path = _shipped(recipe, data.get("path"))
    if path is not None:
        options += ["--data.path", path]
    extra = data.get("extra_train")
    if isinstance(extra, list):
        fixed = []
        for corpus in extra:
            local = _shipped(recipe, corpus.get("path")) if isinstance(corpus, dict) else None
            fixed.append(corpus if local is None else {**corpus, "path": local})
        if fixed != extra:
            options += ["--data.extra_train", json.dumps(fixed)]
    return options


def resolve_recipe_names(argv: list[str]) -> list[str]:
    """`argv` with every `--config NAME` that is not a file replaced by the recipe's path and its
    `shipped_data_options` (options given after it still override them). A file of that name wins
    over a recipe.

    Raises:
        ConfigError: NAME is neither a file nor a recipe, or two packages ship it.
    """
    out: list[str] = []
    catalog: Catalog | None = None
    done = 0
    for i, value, joined in config_options(argv):
        if (
            Path(value).expanduser().is_file()
            or not _NAME.match(value)
            or value.endswith(_CONFIG_SUFFIXES)
        ):
            continue
        catalog = catalog or find_recipes()
        recipe = catalog.find(value)
        if recipe is None:
            raise ConfigError(
                f"no config file or recipe named {value!r} (`ds2hub recipes` lists the recipes)"
            )
        out += argv[done:i]
        out += [f"--config={recipe.path}"] if joined else [argv[i], str(recipe.path)]
        out += shipped_data_options(recipe)
        done = i + (1 if joined else 2)
    out += argv[done:]
    return out


def main(argv: list[str]) -> None:
    """`ds2hub recipes`: lists every recipe with its package and description; what could not be
    read is reported on stderr by name."""
    parser = ArgumentParser(
        prog="ds2hub recipes",
        description="List the recipes of ds2hub and of installed plugins "
        "(run one with `ds2hub fit --config NAME`).",
    )
    parser.add_argument("--paths", action="store_true", help="show each recipe's file")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 2 if any plugin has a problem"
    )
    args = parser.parse_args(argv)
    catalog = find_recipes()
    clashing = set(catalog.clashes())
    rows = [
        (r.qualified if r.name in clashing else r.name, r.package, r.description)
        + ((str(r.path),) if args.paths else ())
        for r in catalog.recipes
    ]
    header = ("name", "package", "description") + (("file",) if args.paths else ())
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        print("  ".join(cells).rstrip())
    problems = [*catalog.problems, *registry_problems()]
    for problem in problems:
        print(f"ds2hub: warning: {problem}", file=sys.stderr)
    if args.strict and problems:
        raise ConfigError(f"{len(problems)} plugin problem(s), listed above")
