"""Checkpoints that survive a killed or crashed run: never a half-written `last.ckpt`.

Lightning (2.6) writes a checkpoint to a temporary file in `$TMPDIR` and `shutil.move`s it onto
the target: a rename (atomic, though never fsync'ed) on one filesystem, but a *copy* into the
target path when `$TMPDIR` is elsewhere (a local `/tmp`, checkpoints on NFS/Lustre), so a run
killed during the copy leaves a truncated checkpoint where the previous good one was.

`AtomicCheckpointIO` writes the temporary file beside the target, fsyncs it, renames it over the
target (atomic on POSIX within one folder) and fsyncs the folder. The `ds2hub` CLI installs it
unless a recipe names its own `CheckpointIO`.
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; some systems (Windows) cannot open a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Calls `write(file)` on a temporary file beside `path` and renames it over `path`, so that
    `path` always holds either its old content or the complete new one, never a part.

    Args:
        path: the file to (re)place; its folder is created if needed.
        write: writes the new content into the open binary file it is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden and not ending in `.ckpt`, so that nothing looking for checkpoints picks it up.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes it private; checkpoints were not
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
