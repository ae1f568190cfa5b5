"""Finds tokenizer classes by `kind` through the `ds2hub.tokenizers` entry-point group (a plugin
registers its own there, see `ds2hub.plugins`): a saved tokenizer file names its class by `kind`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ds2hub.errors import ConfigError
from ds2hub.paths import inside
from ds2hub.plugins import TOKENIZERS, load_group
from ds2hub.tokenizers.base import CONFIG_NAME, Tokenizer


class TokenizerFileError(ConfigError):
    """A saved tokenizer names a file it may not read (outside its folder) or that is missing."""


def available_tokenizers() -> dict[str, type[Tokenizer]]:
    """All registered tokenizer classes by kind (the built-in ones and those of plugins)."""
    # A plugin that fails to import or reuses a kind is logged by name; the others still load.
    return load_group(TOKENIZERS)[0]


def tokenizer_from_config(config: dict[str, Any]) -> Tokenizer:
    """Rebuilds a tokenizer from `{"kind": ..., "init_args": ...}` (a tokenizer file) or from
    `Tokenizer.to_config()` output (`class_path` form, as checkpoints store it).

    Only registered tokenizer classes are ever built: a saved file cannot name arbitrary code.
    """
    kinds = available_tokenizers()
    if "kind" in config:
        cls = kinds.get(config["kind"])
        problem = f"unknown tokenizer kind {config['kind']!r}"
    else:
        cls = {c.class_path(): c for c in kinds.values()}.get(config.get("class_path", ""))
        problem = f"tokenizer {config.get('class_path')!r} is not registered"
    if cls is None:
        raise KeyError(f"{problem}; installed kinds: {sorted(kinds)}")
    return cls.from_config(config)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Loads the tokenizer saved in `directory` (its `ds2hub_tokenizer.json`).

    File arguments (the class's `file_args`: a lexicon, a SentencePiece model) are read relative
    to `directory` and must stay inside it (`ds2hub.paths.inside`), so a downloaded model cannot
    make ds2hub read other files; None keeps the class's default (e.g. jieba's dictionary).

    Raises:
        TokenizerFileError: a file argument is absolute, climbs out with `..`, or is missing.
    """
    directory = Path(directory)
    config = json.loads((directory / CONFIG_NAME).read_text())
    cls = available_tokenizers().get(config.get("kind", ""))
    init_args = dict(config.get("init_args") or {})
    for name in getattr(cls, "file_args", ()):
        if init_args.get(name) is not None:
            init_args[name] = inside(
                directory, init_args[name], f"{directory / CONFIG_NAME}: {name}", TokenizerFileError
            )
    return tokenizer_from_config({**config, "init_args": init_args})
