"""Weights & Biases logging that never stops a training run."""

from __future__ import annotations

import logging
import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def wandb_has_credentials() -> bool:
    """Whether an API key is configured (environment or `wandb login`'s netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class DS2WandbLogger(WandbLogger):
    """Lightning's `WandbLogger`, made safe for any machine.

    - Without an API key (and no explicit `WANDB_MODE`) the run is written offline under
      `save_dir/wandb`; `wandb sync` uploads it later.
    - If the W&B service cannot be reached, the run falls back to offline instead of failing.

    Use `group` for the recipe and language and `tags` for anything to filter by; the
    `WandbExtras` callback adds tokenizer and model-size tags and the validation table.
    """

    def __init__(self, *args: Any, init_timeout: float = 60.0, **kwargs: Any) -> None:
        if (
            not kwargs.get("offline")
            and "WANDB_MODE" not in os.environ
            and not wandb_has_credentials()
        ):
            log.info("no W&B API key found: logging offline (upload later with `wandb sync`)")
            kwargs["offline"] = True
        import wandb

        kwargs.setdefault("settings", wandb.Settings(init_timeout=init_timeout))
        super().__init__(*args, **kwargs)

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
