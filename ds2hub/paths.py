"""What a name given to ds2hub means: a hub id or a local path (`looks_local`, `missing_local`),
a model shipped in the package (`shipped_model`), and the files a downloaded model folder may name
(`inside`): one rule each, for every command."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePath
from typing import Any

# A hub id is `name` or `owner/name` (letters, digits, `-`, `_`, `.`), optionally `@revision`.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def looks_local(name: str) -> bool:
    """Whether `name` can only mean a local file or folder (not a hub id such as `user/name`).

    Hub ids have at most one `/`; a path starting with `/`, `.` or `~`, with more parts, ending in
    `.ckpt`, or whose first part is a folder here (`recipes/digits`) is local.
    """
    if name.startswith(("/", ".", "~")) or "\\" in name or name.endswith(".ckpt"):
        return True
    if not _HUB_ID.match(name.split("@")[0]):
        return True
    return "/" in name and Path(name.split("/")[0]).is_dir()


# Models shipped inside the package, one hub folder each (what `ds2hub push --dry-run` writes),
# loadable by their folder's name: `ds2hub.from_pretrained("digits-demo")`.
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def available_models() -> list[str]:
    """The names of the models shipped with ds2hub, which `from_pretrained` and `ds2hub
    transcribe --model` take (`digits-demo`: the `digits` recipe's demo model)."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").is_file())


def shipped_model(name: str) -> Path | None:
    """The folder of the shipped model `name`, or None if there is none of that name.

    A file or folder `name` in the current directory comes first (a path always means that path,
    as before the model shipped); a shipped name comes before the hub, whose ids have an owner
    (`user/name`) where shipped names have none.
    """
    if name not in available_models() or Path(name).expanduser().exists():
        return None
    return PRETRAINED_DIR / name


def missing_local(name: str) -> bool:
    """Whether `name` can only be a local path and nothing is there: the caller's cue for a
    one-line "does not exist" instead of the hub client's errors."""
    return looks_local(name) and not Path(name).expanduser().exists()


def is_hub_id(name: str) -> bool:
    """Whether `name` (optionally `@revision`) names a hub repository `owner/name` rather than
    something on this machine."""
    return "/" in name and not looks_local(name) and not Path(name).expanduser().exists()


def inside(directory: Path, value: object, where: str, error: type[Exception] = ValueError) -> str:
    """`value`, a file named by a folder's own metadata, as a path inside `directory`.

    Only a relative path without `..` is accepted, so a downloaded folder cannot make ds2hub read
    other files of the user's machine. The check is on the name, not on where symlinks lead,
    because the hub's cache links every snapshot file to a blob elsewhere.

    Raises:
        error: (with `where` and the reason) `value` is not a name, leaves the folder, or is
            missing.
    """
    where = f"{where}={value!r}"
    if not isinstance(value, str) or not value:
        raise error(f"{where} is not a file name")
    relative = PurePath(value)
    if relative.is_absolute() or relative.drive or ".." in relative.parts or value.startswith("~"):
        raise error(
            f"{where} points outside the model folder; a model folder may only name files "
            "inside itself"
        )
    path = directory / relative
    if not path.is_file():
        raise error(f"{where}: no such file in the model folder")
    return str(path)


def new_file_mode() -> int:
    """The permission bits `open()` gives a new file (0o666 less the process's umask), for files
    written by a route that makes them private (`tempfile.mkstemp`, safetensors)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def read_json(path: Path, error: type[Exception], missing: str) -> Any:
    """The JSON in `path`, decoded.

    Raises:
        error: `missing` when the file does not exist; "... is not valid JSON" when it is not
            UTF-8 JSON (one line each, for model folders a user or a download gave).
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(missing) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as decode_error:
        raise error(f"{path} is not valid JSON: {decode_error}") from None
