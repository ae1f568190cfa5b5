"""Checkpoints that survive a killed or crashed run: never a half-written `last.ckpt`.

Lightning (2.6) writes to a temporary file in `$TMPDIR` and `shutil.move`s it onto the target: a
*copy* when `$TMPDIR` is on another filesystem, so a run killed mid-copy leaves a truncated file
where the previous good checkpoint was. `AtomicCheckpointIO` writes beside the target, fsyncs,
renames (atomic on POSIX) and fsyncs the folder; the `ds2hub` CLI installs it unless a recipe
names its own `CheckpointIO`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ds2hub.paths import new_file_mode


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; some systems (Windows) cannot open a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Calls `write(file)` on a temporary binary file beside `path` (its folder created if needed)
    and renames it over `path`, which always holds either its old content or the new one whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden and not ending in `.ckpt`, so that nothing looking for checkpoints picks it up.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, new_file_mode())  # mkstemp makes it private; checkpoints were not
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's `TorchCheckpointIO` with atomic, durable writes to local folders (see the module
    doc); remote URLs (`s3://` ...) keep Lightning's own write."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        fs, local_path = url_to_fs(str(path))  # `file://x` -> `x`
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_write(local_path, lambda file: torch.save(checkpoint, file))
