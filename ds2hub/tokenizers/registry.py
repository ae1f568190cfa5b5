"""Finds tokenizer classes by `kind` through the `ds2hub.tokenizers` entry-point group (a plugin
registers its own there, see `ds2hub.plugins`): a saved tokenizer file names its class by `kind`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ds2hub.errors import ConfigError
from ds2hub.paths import inside, read_json
from ds2hub.plugins import TOKENIZERS, load_group
from ds2hub.tokenizers.base import CONFIG_NAME, Tokenizer


class TokenizerFileError(ConfigError):
    """A saved tokenizer that cannot be loaded: its file is missing or not JSON, names an unknown
    kind, arguments its class refuses (a bad alphabet, a file that is not a SentencePiece model),
    or a file it may not read (outside its folder) or that is missing."""


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
        TokenizerFileError: (one line naming the file) the tokenizer file is missing, not a JSON
            object, or names an unknown kind; a file argument is absolute, climbs out with `..`,
            or is missing; the class refuses the arguments (`TypeError` or `ValueError`).
    """
    directory = Path(directory)
    path = directory / CONFIG_NAME
    missing = f"{directory} has no {CONFIG_NAME}: not a ds2hub model"
    config = read_json(path, TokenizerFileError, missing)
    init_args = (config.get("init_args") or {}) if isinstance(config, dict) else None
    if not isinstance(init_args, dict):
        raise TokenizerFileError(f"{path} must hold {{'kind': ..., 'init_args': {{...}}}}")
    kinds = available_tokenizers()
    kind = config.get("kind")
    cls = kinds.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise TokenizerFileError(
            f"{path}: unknown tokenizer kind {kind!r}; installed kinds: {sorted(kinds)}"
        )
    init_args = dict(init_args)
    for name in cls.file_args:
        if init_args.get(name) is not None:
            init_args[name] = inside(
                directory, init_args[name], f"{path}: {name}", TokenizerFileError
            )
    try:
        return cls.from_config({**config, "init_args": init_args})
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:  # arguments the class refuses
        raise TokenizerFileError(f"{path}: not a valid {kind!r} tokenizer: {error}") from None
