"""Finds tokenizer classes by `kind` through the `ds2hub.tokenizers` entry-point group.

A third-party package registers a tokenizer in its own `pyproject.toml`:

    [project.entry-points."ds2hub.tokenizers"]
    spanish = "ds2hub_spanish:SpanishTokenizer"

after which `load_tokenizer` and `from_pretrained` rebuild it from a saved `tokenizer.json` whose
`kind` is `spanish`.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ds2hub.tokenizers.base import CONFIG_NAME, Tokenizer

ENTRY_POINT_GROUP = "ds2hub.tokenizers"


def available_tokenizers() -> dict[str, type[Tokenizer]]:
    """All registered tokenizer classes by kind (the built-in ones and those of plugins)."""
    from ds2hub.tokenizers import BUILTIN

    found: dict[str, type[Tokenizer]] = {cls.kind: cls for cls in BUILTIN}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in found:
            found[ep.name] = ep.load()
    return found


def tokenizer_from_config(config: dict[str, Any]) -> Tokenizer:
    """Rebuilds a tokenizer from `{"kind": ..., "init_args": ...}` (a `tokenizer.json`) or from
    `Tokenizer.to_config()` output (`class_path` form, as checkpoints store it).

    Only registered tokenizer classes are ever built: a saved file cannot name arbitrary code.
    """
    kinds = available_tokenizers()
    if "kind" in config:
        cls = kinds.get(config["kind"])
        if cls is None:
            raise KeyError(
                f"unknown tokenizer kind {config['kind']!r}; installed kinds: {sorted(kinds)}"
            )
    else:
        by_path = {c.class_path(): c for c in kinds.values()}
        cls = by_path.get(config.get("class_path", ""))
        if cls is None:
            raise KeyError(
                f"tokenizer {config.get('class_path')!r} is not registered; installed kinds: {sorted(kinds)}"
            )
    return cls.from_config(config)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Loads the tokenizer saved in `directory/tokenizer.json`."""
    return tokenizer_from_config(json.loads((Path(directory) / CONFIG_NAME).read_text()))
