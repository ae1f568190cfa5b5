"""Lightning callbacks: W&B run metadata and validation prediction tables."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from ds2hub.audio import load_audio
from ds2hub.data.dataset import audio_source

log = logging.getLogger(__name__)


def train_size(datamodule: Any) -> dict[str, Any]:
    """What is known of the training data's size: hours and utterances of a map-style split; of
    a stream, only that it is one (its durations come as it is read) and its batches per epoch
    if fixed."""
    dataset = datamodule._dataset("train") if hasattr(datamodule, "_dataset") else None
    durations = getattr(dataset, "durations", None)
    if durations is not None:
        return {"train_hours": sum(durations) / 3600, "train_utterances": len(durations)}
    order = getattr(dataset, "order", None)
    if order is None:
        return {}
    return {"train_streaming": True, "train_batches_per_epoch": order.batches_per_epoch}


class WandbExtras(L.Callback):
    """Makes W&B runs comparable across recipes and shows what the model hears and writes.

    At the start of fit it tags the run with the tokenizer kind and model size and stores the
    architecture, parameter count and data sizes in the run config. After every validation it logs
    a table of `num_examples` utterances: audio, reference, prediction and their WER.

    Args:
        num_examples: rows of the validation table (the first utterances, so epochs compare).
    """

    def __init__(self, num_examples: int = 8) -> None:
        self.num_examples = num_examples
        self._rows: list[list[Any]] = []

    @staticmethod
    def _wandb(trainer: L.Trainer) -> WandbLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._wandb(trainer)
        if logger is None or trainer.global_rank != 0:
            return
        from ds2hub.card import size_tag

        params = sum(p.numel() for p in pl_module.parameters())
        tokenizer = pl_module.tokenizer
        run = logger.experiment
        run.tags = tuple(
            sorted({*(run.tags or ()), f"tokenizer-{tokenizer.kind}", size_tag(params)})
        )
        datamodule = trainer.datamodule
        info = {
            "num_parameters": params,
            "tokenizer_kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
        }
        if datamodule is not None:
            info["dataset"] = getattr(datamodule, "path", None)
            info.update(train_size(datamodule))
        for callback in trainer.callbacks:  # the resolved recipe, exactly as LightningCLI saved it
            if isinstance(callback, SaveConfigCallback):
                info["recipe"] = yaml.safe_load(
                    callback.parser.dump(callback.config, skip_none=False)
                )
        run.config.update(info, allow_val_change=True)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not outputs or len(self._rows) >= self.num_examples:
            return
        for index, ref, hyp in zip(batch["indices"], outputs["refs"], outputs["hyps"]):
            if len(self._rows) < self.num_examples:
                self._rows.append([int(index), ref, hyp])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._wandb(trainer)
        if logger is None or not self._rows or trainer.global_rank != 0:
            return
        import wandb
        from torchmetrics.functional.text import word_error_rate

        dataset = trainer.datamodule.datasets["val"]
        rate = pl_module.features.sample_rate
        data = []
        for index, ref, hyp in self._rows:
            try:
                wave = load_audio(audio_source(dataset.data[index][dataset.audio_column])).numpy()
                audio = wandb.Audio(wave, sample_rate=rate, caption=ref)
            except Exception as error:  # noqa: BLE001 - a table without one clip beats a crash
                log.warning("no audio for validation example %d: %s", index, error)
                audio = None
            data.append([trainer.current_epoch, audio, ref, hyp, float(word_error_rate(hyp, ref))])
        logger.log_table(
            "val/predictions",
            columns=[
                "epoch",
                "audio",
                "reference",
                "prediction",
                getattr(pl_module, "word_metric", "wer"),
            ],
            data=data,
        )


class PushToHub(L.Callback):
    """At the end of `fit`, publishes the best checkpoint like `ds2hub push` does.

    Args:
        repo_id: `user/name` on the Hugging Face Hub.
        output_dir: where to write the hub folder (default: `<log_dir>/hub`): a new or empty
            folder, or an earlier export's with `overwrite`; any other folder is left untouched.
        dry_run: write the folder only (no upload), e.g. on machines without a token.
        run_eval: evaluate on the recipe's test data (or validation data if it has none) for
            the model card.
        private: create the repository as private.
        overwrite: replace an earlier export in `output_dir`.
        redact: replace local paths, the user and host name in recipe.yaml and the card; without
            it, the ones found are logged before the upload.
    """

    def __init__(
        self,
        repo_id: str,
        output_dir: str | None = None,
        dry_run: bool = False,
        run_eval: bool = True,
        private: bool = False,
        overwrite: bool = False,
        redact: bool = False,
    ) -> None:
        self.repo_id, self.output_dir, self.dry_run = repo_id, output_dir, dry_run
        self.run_eval, self.private = run_eval, private
        self.overwrite, self.redact = overwrite, redact

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.checkpoint_callback is None:
            return
        from pathlib import Path

        from ds2hub.push import export, local_details, push, summarize

        checkpoint = (
            trainer.checkpoint_callback.best_model_path
            or trainer.checkpoint_callback.last_model_path
        )
        if not checkpoint:
            log.warning("PushToHub: no checkpoint was saved; nothing to publish")
            return
        config = next((cb for cb in trainer.callbacks if isinstance(cb, SaveConfigCallback)), None)
        recipe = None
        if config is not None:
            recipe = Path(trainer.log_dir or ".") / "run_config.yaml"
            recipe.write_text(config.parser.dump(config.config, skip_none=False))
        out = Path(self.output_dir or Path(trainer.log_dir or ".") / "hub")
        try:
            folder = export(
                checkpoint,
                out,
                self.repo_id,
                config=recipe,
                run_eval=self.run_eval,
                overwrite=self.overwrite,
                redact=self.redact,
            )
            log.info("PushToHub: wrote %s", folder)
            details = local_details(folder, self.repo_id)
            if details:
                log.warning(
                    "PushToHub: recipe.yaml and README.md publish these local details "
                    "(PushToHub(redact=True) replaces them):\n%s",
                    summarize(details),
                )
            if not self.dry_run:
                log.info(
                    "PushToHub: uploaded %s",
                    push(folder, self.repo_id, private=self.private or None),
                )
        except Exception as error:  # noqa: BLE001 - training succeeded; publishing can be retried
            log.error(
                "PushToHub failed (retry with `ds2hub push %s --repo-id %s`): %s",
                checkpoint,
                self.repo_id,
                error,
            )
