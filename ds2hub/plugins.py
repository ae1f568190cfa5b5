"""Plugin entry-point groups (`ds2hub.recipes`, `ds2hub.tokenizers`, `ds2hub.normalizers`,
`ds2hub.corpora`; what each takes: docs/guide/plugins.md): how other packages add to ds2hub
without touching it. Loading is per entry point: one plugin that fails to import, or a name
registered twice, is reported by name (`PluginProblem`) while the others load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ds2hub.errors import ConfigError

log = logging.getLogger(__name__)

RECIPES = "ds2hub.recipes"
TOKENIZERS = "ds2hub.tokenizers"
NORMALIZERS = "ds2hub.normalizers"
CORPORA = "ds2hub.corpora"
BUILTIN_SOURCE = "ds2hub"  # the distribution whose registrations are the built-ins


@dataclass(frozen=True)
class PluginProblem:
    """Something one plugin registers that ds2hub could not use (the others still load)."""

    group: str
    name: str
    source: str  # the distribution that registers it (or the entry point's value)
    message: str

    def __str__(self) -> str:
        return f"{self.group} {self.name!r} from {self.source}: {self.message}"


def source_of(ep: EntryPoint) -> str:
    """The distribution that registered `ep` (`ds2hub-german`), or its value when unknown."""
    dist = getattr(ep, "dist", None)
    name = dist.metadata["Name"] if dist is not None and dist.metadata else None
    return name or ep.value


def load_entry_point(group: str, ep: EntryPoint) -> tuple[Any, PluginProblem | None]:
    """`(object, None)`, or `(None, problem)` when the entry point fails to import."""
    try:
        return ep.load(), None
    except Exception as error:  # noqa: BLE001 - a broken plugin must not hide the others
        message = " ".join(f"{type(error).__name__}: {error}".split())
        return None, PluginProblem(group, ep.name, source_of(ep), f"cannot be loaded ({message})")


def load_group(group: str) -> tuple[dict[str, Any], list[PluginProblem]]:
    """Loads every entry point of `group`, ds2hub's own first (so a plugin cannot take over a
    built-in name); each problem is logged.

    Returns:
        (objects by name, problems): an entry point that fails to load, or a name that a second
        distribution registers again, is a problem; the first registration of a name is kept.
    """
    found: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems: list[PluginProblem] = []
    for ep in sorted(entry_points(group=group), key=lambda ep: source_of(ep) != BUILTIN_SOURCE):
        source = source_of(ep)
        if ep.name in found and origin[ep.name] == source:
            continue  # the same distribution seen twice (an editable install beside a wheel)
        obj, problem = load_entry_point(group, ep)
        if problem is not None:
            problems.append(problem)
            continue
        if ep.name in found:
            if found[ep.name] is not obj:
                message = f"already registered by {origin[ep.name]}; this one is ignored"
                problems.append(PluginProblem(group, ep.name, source, message))
            continue
        found[ep.name], origin[ep.name] = obj, source
    for problem in problems:
        log.warning("plugin problem: %s", problem)
    return found, problems


def registry_problems() -> list[PluginProblem]:
    """The problems of the tokenizer, normaliser and corpus-layout groups (`load_group`), which
    `ds2hub recipes --strict` reports besides the recipes' own: a typo in a plugin's entry point
    fails its contribution check, not the first user who loads its model."""
    return [p for group in (TOKENIZERS, NORMALIZERS, CORPORA) for p in load_group(group)[1]]


def get_normalizer(name: str) -> Callable[[str], str]:
    """The normaliser registered as `name`.

    Raises:
        ConfigError: no normaliser has that name (the message lists the installed ones).
    """
    found, problems = load_group(NORMALIZERS)
    if name in found:
        return found[name]
    broken = [str(p) for p in problems if p.name == name]
    detail = f" ({'; '.join(broken)})" if broken else ""
    raise ConfigError(f"no text normaliser named {name!r}{detail}; installed: {sorted(found)}")
