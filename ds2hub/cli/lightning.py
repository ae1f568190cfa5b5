"""`DS2CLI`: the LightningCLI behind `ds2hub fit/validate/test/predict` (imported only by them,
so the other commands start without Lightning)."""

from __future__ import annotations

import argparse
import logging
import re
import shlex
from collections.abc import Callable
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

from ds2hub.arguments import closest_option, with_closest_option
from ds2hub.cli.args import CKPT_KEYWORDS, ds2hub_spelling, require_file
from ds2hub.errors import UsageError
from ds2hub.paths import missing_local
from ds2hub.training.callbacks import StopOnSignal
from ds2hub.training.checkpoint import AtomicCheckpointIO

log = logging.getLogger(__name__)

# `lightning` gives its logger a handler of its own and lets it propagate too: under the root
# handler that the console script sets up, every Lightning line would be printed twice.
if logging.getLogger().handlers:
    import lightning

    logging.getLogger("lightning").removeHandler(getattr(lightning, "_console", None))


def _with_closest_option(parser: Any, message: str, argv: list[str]) -> str:
    """`message`, plus the closest valid option of the subcommand's parser when it names an
    unknown one (`--trainer.max_epoch` -> `--trainer.max_epochs`; a recipe's `trainer.max_stepz`
    -> `trainer.max_steps`), in ds2hub's spelling (`--ckpt-path`)."""
    action = getattr(parser, "_subcommands_action", None)
    sub = action._name_parser_map.get(argv[0]) if action is not None and argv else None
    if sub is None:
        return message
    message = with_closest_option(message, sub)
    key = re.search(r"does not accept option '([^']+)'", message)  # a key of a recipe file
    keys = [option[2:] for option in sub._option_string_actions if option.startswith("--")]
    if key and (near := closest_option(key.group(1), keys)):
        message += f" (did you mean {near}?)"
    return ds2hub_spelling(message)


def _in_ds2hub_spelling(format_help: Callable[..., str]) -> Callable[..., str]:
    """A parser's `format_help` whose text spells `LIGHTNING_OPTIONS` as ds2hub documents them."""
    return lambda *args, **kwargs: ds2hub_spelling(format_help(*args, **kwargs))


class DS2CLI(LightningCLI):
    """LightningCLI with the DataModule's tokenizer and front end wired into the model, so a recipe
    states them once; the paths a command names are checked before anything is built, and
    checkpoints are written atomically (`AtomicCheckpointIO`).

    Args:
        argv: the command line (without the program name), recorded in checkpoints for cards.
    """

    def __init__(self, *args: Any, argv: list[str], **kwargs: Any) -> None:
        self._argv = argv
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # The tokenizer may be fitted on training transcripts, so link the instantiated object.
        parser.link_arguments(
            "data", "model.tokenizer", compute_fn=lambda dm: dm.tokenizer, apply_on="instantiate"
        )
        parser.link_arguments(
            "data", "model.features", compute_fn=lambda dm: dm.features, apply_on="instantiate"
        )

    def parse_arguments(self, parser, args) -> None:
        """LightningCLI's, then missing local files named by the command become one-line errors
        before anything is read or built, not tracebacks deep inside `datasets` or `torch.load`."""
        action = getattr(parser, "_subcommands_action", None)
        for sub in action._name_parser_map.values() if action is not None else ():
            sub.allow_abbrev = False  # (jsonargparse < 4.53 does not pass it down to subcommands)
            sub.format_help = _in_ds2hub_spelling(sub.format_help)  # `ds2hub fit --help`
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as error:  # (parser_kwargs: exit_on_error=False)
            raise UsageError(_with_closest_option(parser, str(error), self._argv)) from None
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt = str(config.get("ckpt_path") or "")
        keyword = ckpt in CKPT_KEYWORDS or ckpt.startswith("registry:")
        if ckpt and not keyword and "://" not in ckpt:  # URLs are read by fsspec
            require_file(ckpt, "checkpoint (--ckpt-path)")
        path = config.get("data.path")
        if path and missing_local(str(path)):
            raise UsageError(f"data path {path!r} (data.path) does not exist")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Lightning's, plus `AtomicCheckpointIO` unless the recipe names a CheckpointIO or a
        strategy with checkpoint writing of its own (FSDP, DeepSpeed, XLA)."""
        trainer = self._get(self.config_init, "trainer", default={})
        plugins = trainer.get("plugins")
        plugins = [] if plugins is None else plugins if isinstance(plugins, list) else [plugins]
        strategy, accelerator = trainer.get("strategy", "auto"), trainer.get("accelerator", "auto")
        if isinstance(strategy, str):
            own_io = strategy.startswith(("fsdp", "deepspeed", "xla"))
        else:  # a Strategy object: sharded ones write their own checkpoints, others take ours
            name = type(strategy).__name__
            own_io = getattr(strategy, "_checkpoint_io", None) is not None or name.startswith(
                ("FSDP", "DeepSpeed", "XLA", "SingleDeviceXLA", "ModelParallel")
            )
        own_io = own_io or (isinstance(accelerator, str) and accelerator in ("tpu", "xla"))
        if not own_io and not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        self.model.command = shlex.join(["ds2hub", *self._argv])  # recorded for model cards
        self.trainer.callbacks.append(StopOnSignal())
        if not self.trainer.loggers:  # `--trainer.logger false`: nothing to log learning rates to
            monitors = [c for c in self.trainer.callbacks if isinstance(c, LearningRateMonitor)]
            for monitor in monitors:
                self.trainer.callbacks.remove(monitor)
            if monitors:
                log.info("no logger: the recipe's LearningRateMonitor is left out")
