"""Lightning callbacks: W&B run metadata and validation prediction tables; a checkpoint and the
right exit status when a signal stops a fit."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from ds2hub.audio import load_audio
from ds2hub.inference.evaluate import edit_counts, rate
from ds2hub.model.presets import size_tag
from ds2hub.training.data.dataset import audio_source
from ds2hub.training.loggers import media_kept_with_offline_run

log = logging.getLogger(__name__)


def train_size(datamodule: Any) -> dict[str, Any]:
    """The training data's size as far as known: hours and utterances of a map-style split; of a
    stream (whose durations come as it is read), that it is one and its batches per epoch if fixed."""
    dataset = datamodule._dataset("train") if hasattr(datamodule, "_dataset") else None
    durations = getattr(dataset, "durations", None)
    if durations is not None:
        return {"train_hours": sum(durations) / 3600, "train_utterances": len(durations)}
    order = getattr(dataset, "order", None)
    if order is None:
        return {}
    return {"train_streaming": True, "train_batches_per_epoch": order.batches_per_epoch}


class WandbExtras(L.Callback):
    """Makes W&B runs comparable across recipes and shows what the model hears and writes: at the
    start of fit it tags the run with the tokenizer kind and model size and stores the architecture,
    parameter count and data sizes in the run config; after every validation it logs a table of
    `num_examples` utterances: audio, reference, prediction and their error rate.

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
        params = sum(p.numel() for p in pl_module.parameters())
        tokenizer = pl_module.tokenizer
        run = logger.experiment
        run.tags = tuple(
            sorted({*(run.tags or ()), f"tokenizer-{tokenizer.kind}", size_tag(params)})
        )
        info = {
            "num_parameters": params,
            "tokenizer_kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
        }
        if trainer.datamodule is not None:
            info["dataset"] = getattr(trainer.datamodule, "path", None)
            info.update(train_size(trainer.datamodule))
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
        if trainer.sanity_checking or not outputs:
            return
        rows = zip(batch["indices"], outputs["refs"], outputs["hyps"])
        self._rows += [[int(index), ref, hyp] for index, ref, hyp in rows]
        del self._rows[self.num_examples :]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._wandb(trainer)
        if logger is None or not self._rows or trainer.global_rank != 0:
            return
        import wandb

        metric = getattr(pl_module, "word_metric", "wer")
        dataset = trainer.datamodule.datasets["val"]
        data = []
        for index, ref, hyp in self._rows:
            try:
                wave = load_audio(audio_source(dataset.data[index][dataset.audio_column])).numpy()
                audio = wandb.Audio(wave, sample_rate=pl_module.features.sample_rate, caption=ref)
            except Exception as error:  # noqa: BLE001 - a table without one clip beats a crash
                log.warning("no audio for validation example %d: %s", index, error)
                audio = None
            error_rate = rate(edit_counts([hyp], [ref], metric))  # as val/wer (or val/ser) counts
            data.append([trainer.current_epoch, audio, ref, hyp, error_rate])
        columns = ["epoch", "audio", "reference", "prediction", metric]
        with media_kept_with_offline_run(logger.experiment):  # the clips, for `wandb sync`
            logger.log_table("val/predictions", columns=columns, data=data)


# The signal that stopped this process's last fit (at most one entry): the console script exits
# with 128 + it, as a shell expects of a process a signal ended.
STOPPED_BY: list[int] = []


class StopOnSignal(L.Callback):
    """SIGTERM or SIGINT (Ctrl+C) during `fit`: a checkpoint to resume from, then the end.

    Both stop the fit after the running step (`trainer.should_stop`, and for SIGTERM Lightning's
    own handler too), rather than raising KeyboardInterrupt wherever the step happens to be;
    this callback then writes `interrupted.ckpt` beside the run's checkpoints (the
    `ModelCheckpoint` folder, else `default_root_dir`) and records the signal in `STOPPED_BY`. A
    second signal ends the process at once, without a checkpoint (a stuck step must not hold a
    job scheduler's stop).
    """

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._saved = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        STOPPED_BY.clear()
        self._saved = False
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread
        # Installed now, over Lightning's SIGTERM handler (registered when the fit began).
        self._previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        lightnings = self._previous[signal.SIGTERM]

        def stop(signum: int, frame: Any) -> None:
            if STOPPED_BY:
                log.warning("second %s: stopping now, without a checkpoint", _name(signum))
                os._exit(128 + signum)
            STOPPED_BY.append(signum)
            log.warning("%s: stopping after this step and writing a checkpoint", _name(signum))
            trainer.should_stop = True
            if signum == signal.SIGTERM and callable(lightnings):
                lightnings(signum, frame)  # (it also stops DDP's other processes)

        for signum in self._previous:
            signal.signal(signum, stop)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        self._previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._checkpoint(trainer)  # stopped through `should_stop`

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, KeyboardInterrupt) and not STOPPED_BY:
            STOPPED_BY.append(signal.SIGINT)  # (before training started: no handler of ours)
        self._checkpoint(trainer)  # stopped through Lightning's SIGTERMException

    def _checkpoint(self, trainer: L.Trainer) -> None:
        if not STOPPED_BY or self._saved or trainer.state.fn != "fit":
            return
        folder = getattr(trainer.checkpoint_callback, "dirpath", None) or trainer.default_root_dir
        path = Path(folder) / "interrupted.ckpt"
        trainer.save_checkpoint(path)
        self._saved = True
        log.warning(
            "%s at step %d: wrote %s (resume with --ckpt-path %s)",
            _name(STOPPED_BY[0]), trainer.global_step, path, path,
        )  # fmt: skip


def _name(signum: int) -> str:
    return signal.Signals(signum).name
