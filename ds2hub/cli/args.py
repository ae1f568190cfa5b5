"""What the `ds2hub` commands check in a command line before anything is built."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ds2hub.errors import UsageError

# `--ckpt-path` values Lightning resolves itself rather than reading a file (and `registry:...`).
CKPT_KEYWORDS = ("best", "last", "hpc", "registry")


# Options of LightningCLI's `fit`/`validate`/`test`/`predict` themselves, in the kebab-case of
# ds2hub's own commands (`--batch-size`, `--repo-id`) -> Lightning's names, which keep working.
# Dotted options (`--trainer.max_epochs`) are recipe keys and keep the recipe's spelling.
LIGHTNING_OPTIONS = {
    "--ckpt-path": "--ckpt_path",
    "--print-config": "--print_config",
    "--seed-everything": "--seed_everything",
}


def lightning_spelling(argv: list[str]) -> list[str]:
    """`argv` with `LIGHTNING_OPTIONS` spelt as LightningCLI parses them (`--ckpt-path X` and
    `--ckpt-path=X` -> `--ckpt_path`); everything else unchanged."""
    spelt = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        spelt.append(LIGHTNING_OPTIONS.get(name, name) + sep + value)
    return spelt


def ds2hub_spelling(text: str) -> str:
    """`text` (LightningCLI's help or error message) with `LIGHTNING_OPTIONS` spelt as ds2hub
    documents them (`--ckpt_path` -> `--ckpt-path`)."""
    for kebab, lightning in LIGHTNING_OPTIONS.items():
        text = re.sub(rf"{re.escape(lightning)}\b", kebab, text)
    return text


def config_options(argv: list[str]) -> Iterator[tuple[int, str, bool]]:
    """Each `--config VALUE`, `-c VALUE` or `--config=VALUE` of `argv`: its index, the value and
    whether it was joined with `=` (one argument rather than two)."""
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            yield i, argv[i + 1], False
        elif arg.startswith("--config="):
            yield i, arg.split("=", 1)[1], True


def require_file(path: str, what: str) -> None:
    """Raises `UsageError` unless `path` is an existing file (`what` it should be: "audio file",
    "checkpoint (--ckpt-path)"), saying so when it is a folder."""
    file = Path(path).expanduser()
    if file.is_dir():
        article = "an" if what[:1] in "aeiou" else "a"
        raise UsageError(f"{path!r} is a folder, not {article} {what}")
    if not file.is_file():
        raise UsageError(f"{what} {path!r} does not exist or is not a file")


def check_config_files(argv: list[str]) -> None:
    """Every `--config`/`-c` file must exist (jsonargparse would answer with 100 lines of usage).

    Inline YAML (`--config '{trainer: ...}'`), which jsonargparse also accepts, is left to it.
    """
    for _, value, _ in config_options(argv):
        if not (value.lstrip()[:1] in "{[" or "\n" in value or ": " in value):
            require_file(value, "config file")
