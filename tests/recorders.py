"""Callbacks tests add to real runs (by class path, also in subprocesses) to see what happened."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L


class OrderRecorder(L.Callback):
    """Appends, for every training batch the model receives, `{"epoch", "step", "rank", "ids"}` to
    a JSON-lines file (`ids`: the dataset indices of its utterances)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        record = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "rank": trainer.global_rank,
            "ids": [int(i) for i in batch.get("indices", [])],
            "texts": list(batch.get("texts", [])),
            "pid": os.getpid(),
            "workers": _worker_pids(trainer.train_dataloader),
        }
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _worker_pids(loader: Any) -> list[int]:
    """Process ids of a DataLoader's running workers ([] without workers)."""
    iterator = getattr(loader, "_iterator", None)
    return sorted(w.pid for w in getattr(iterator, "_workers", []))


def read_order(path: str | Path) -> list[dict[str, Any]]:
    """The records an `OrderRecorder` wrote, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
