"""A finished training run's recipe and data, as `ds2hub push` and `ds2hub lm tune` read them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds2hub.features import FeatureConfig
from ds2hub.training.data import SpeechDataModule

if TYPE_CHECKING:
    from ds2hub.inference.recognizer import SpeechRecognizer


def find_run_config(checkpoint: Path) -> Path | None:
    """The `config.yaml` LightningCLI saved for the run that wrote `checkpoint`."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "config.yaml").exists():
            return folder / "config.yaml"
    return None


def datamodule_from_config(
    config: dict[str, Any], recognizer: SpeechRecognizer
) -> SpeechDataModule:
    """The recipe's DataModule, with the trained model's tokenizer and features, making features
    in its loader (evaluation runs outside the Trainer, whose step computes them for
    `frontend_on_device`)."""
    args = {k: v for k, v in config.get("data", {}).items() if k not in ("tokenizer", "features")}
    args["frontend_on_device"] = False
    return SpeechDataModule(
        tokenizer=recognizer.tokenizer,
        features=FeatureConfig(**recognizer.features.to_dict()),
        **args,
    )


def stage_batches(datamodule: SpeechDataModule, stage: str) -> Iterable[dict[str, Any]]:
    """The batches of one stage (`test` or `val`) of the DataModule."""
    datamodule.setup({"test": "test", "val": "validate"}[stage])
    return datamodule.test_dataloader() if stage == "test" else datamodule.val_dataloader()


__all__ = ["datamodule_from_config", "find_run_config", "stage_batches"]
