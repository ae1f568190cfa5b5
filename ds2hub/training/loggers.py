"""Weights & Biases logging that never stops a training run, and runs without W&B installed
(recipes list `wandb_if_installed` beside a `CSVLogger`, whose `metrics.csv` is the run's record)."""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.loggers.logger import DummyLogger

from ds2hub.extras import require

log = logging.getLogger(__name__)


def wandb_has_credentials() -> bool:
    """Whether an API key is configured (environment or `wandb login`'s netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class DS2WandbLogger(WandbLogger):
    """Lightning's `WandbLogger`, made safe for any machine: without an API key (and no explicit
    `WANDB_MODE`) the run is written offline under `save_dir/wandb` (`wandb sync` uploads it
    later); if the W&B service cannot be reached, the run goes on offline instead of failing."""

    def __init__(self, *args: Any, init_timeout: float = 60.0, **kwargs: Any) -> None:
        if not (kwargs.get("offline") or "WANDB_MODE" in os.environ or wandb_has_credentials()):
            log.info("no W&B API key found: logging offline (upload later with `wandb sync`)")
            kwargs["offline"] = True
        wandb = require("wandb", "wandb")
        kwargs.setdefault("settings", wandb.Settings(init_timeout=init_timeout))
        super().__init__(*args, **kwargs)
        # Lightning passes `anonymous=None`, which wandb >= 0.19 warns about at every run.
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        # wandb looks for a git repository from its folder and warns when the folder is not
        # there yet: the run's folder, which the run writes into anyway, is made first.
        if self._wandb_init.get("dir"):
            os.makedirs(self._wandb_init["dir"], exist_ok=True)

    @property
    def experiment(self):  # noqa: D102 - see WandbLogger.experiment
        try:
            return super().experiment
        except Exception as error:  # noqa: BLE001 - any network/auth failure: keep training
            if self._offline:
                raise
            log.warning("W&B unreachable (%s): continuing offline", error)
            self._offline = True
            self._experiment = None
            return super().experiment


@contextmanager
def media_kept_with_offline_run(run: Any) -> Iterator[None]:
    """Within it, an offline W&B `run` stages the files of what it logs as artifacts in its own
    folder (`offline-run-*/artifacts/staging/`), not in the user's wandb data folder.

    A logged `wandb.Table` is uploaded as an artifact: its JSON, with an `audio-file` entry per
    clip, and the clips. (The table under the run's `files/media/table/` is wandb's copy for old
    clients, which holds only the media's class names: "Audio".) wandb stages the artifact in
    `WANDB_DATA_DIR` (default `~/.local/share/wandb`) until `wandb sync` uploads it, so a run
    synced after that folder was cleaned, or from a copy of its folder, loses its audio. Staged
    here, the run's folder holds all it uploads (named by absolute path in its log: sync it where
    it was written). A user's own `WANDB_DATA_DIR` is left alone, and so is an online run.
    """
    if not getattr(run.settings, "_offline", False) or "WANDB_DATA_DIR" in os.environ:
        yield
        return
    os.environ["WANDB_DATA_DIR"] = str(Path(run.dir).parent)  # run.dir: the run's files/
    try:
        yield
    finally:
        del os.environ["WANDB_DATA_DIR"]


def wandb_installed() -> bool:
    """Whether the `wandb` package can be imported (the `wandb` extra)."""
    return importlib.util.find_spec("wandb") is not None


def wandb_if_installed(
    save_dir: str = ".",
    project: str = "ds2hub",
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    offline: bool = False,
    log_model: bool | str = False,
    init_timeout: float = 60.0,
) -> Logger:
    """A `DS2WandbLogger` when `wandb` is installed; otherwise Lightning's `DummyLogger` (records
    nothing) and one logged line, so a recipe with W&B logging runs on a plain `pip install ds2hub`.

    Args:
        save_dir: where W&B writes the run (offline runs land in `save_dir/wandb`).
        project: the W&B project.
        name: the run's name (None: W&B picks one).
        group: the run group (recipe and language, e.g. `digits-en`).
        tags: tags to filter runs by.
        offline: never contact the W&B service.
        log_model: upload checkpoints as W&B artifacts (`all`, True or False).
        init_timeout: seconds to wait for the W&B service before going offline.
    """
    arguments = dict(locals())  # the parameters above, passed on unchanged
    if not wandb_installed():
        log.warning(
            "wandb is not installed: this run logs to CSV only "
            "(pip install 'ds2hub[wandb]' for Weights & Biases)"
        )
        return DummyLogger()
    return DS2WandbLogger(**arguments)
