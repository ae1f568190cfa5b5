"""The `ds2hub` command: LightningCLI's fit/validate/test/predict over recipes."""

from __future__ import annotations

import logging
import sys

from lightning.pytorch.cli import LightningCLI

from ds2hub.data import SpeechDataModule
from ds2hub.task import DeepSpeech2Task


class DS2CLI(LightningCLI):
    """LightningCLI with the DataModule's tokenizer and front end wired into the model, so a recipe
    states them once."""

    def add_arguments_to_parser(self, parser) -> None:
        # The tokenizer may be fitted on training transcripts, so link the instantiated object.
        parser.link_arguments(
            "data", "model.tokenizer", compute_fn=lambda dm: dm.tokenizer, apply_on="instantiate"
        )
        parser.link_arguments(
            "data", "model.features", compute_fn=lambda dm: dm.features, apply_on="instantiate"
        )


def main(args: list[str] | None = None) -> DS2CLI:
    """Entry point of the `ds2hub` console script (`args` replaces `sys.argv[1:]` in tests)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return DS2CLI(
        DeepSpeech2Task,
        SpeechDataModule,
        args=args,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
