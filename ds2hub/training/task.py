"""The LightningModule that trains Deep Speech 2 with CTC: loss, optimisers, metrics, logging."""

from __future__ import annotations

import itertools
import logging
import platform
import time
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import grad_norm
from torchmetrics import Metric

from ds2hub.decoding import DecoderConfig, TextDecoder, text_decoder
from ds2hub.errors import ConfigError
from ds2hub.features import FeatureConfig, LogSpectrogram, check_network_input, frame_statistics
from ds2hub.inference.evaluate import Counts, ErrorRates
from ds2hub.inference.recognizer import CHECKPOINT_KEY, read_checkpoint
from ds2hub.model import DeepSpeech2, DeepSpeech2Config
from ds2hub.tokenizers import Tokenizer, tokenizer_from_config
from ds2hub.training.data.dataset import is_empty_batch
from ds2hub.training.finetune import (
    FineTuneConfig,
    check_freeze_names,
    drop_frozen_gradients,
    start_from,
)

log = logging.getLogger(__name__)


def describe_hardware(trainer: L.Trainer) -> str:
    """e.g. '8 x NVIDIA H100 80GB HBM3, 16-mixed' or '1 x CPU (2 threads), 32-true'."""
    n = trainer.num_devices * trainer.num_nodes
    if torch.cuda.is_available() and trainer.strategy.root_device.type == "cuda":
        name = torch.cuda.get_device_name(trainer.strategy.root_device)
    else:
        name = (
            f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
        )
    return f"{n} x {name}, {trainer.precision}"


def ctc_feasible(
    targets: torch.Tensor, target_lengths: torch.Tensor, input_lengths: torch.Tensor
) -> torch.Tensor:
    """(B,) bool: whether CTC can align each target to its frames (it needs one frame per token
    plus one blank between each pair of repeated tokens)."""
    repeats = ((targets[:, 1:] == targets[:, :-1]) & (targets[:, 1:] != 0)).sum(dim=1)
    needed = target_lengths + repeats
    return (needed <= input_lengths) & (target_lengths > 0)


CTCReduction = Literal["utterance", "token"]


def ctc_loss(
    logits: torch.Tensor,
    logit_lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    blank_id: int = 0,
    reduction: CTCReduction = "utterance",
) -> torch.Tensor:
    """CTC loss of a batch, always computed in fp32.

    Under `16-mixed` the logits arrive in half precision, whose range cannot hold CTC's
    log-probabilities over long utterances; autocast is switched off and log_softmax done in fp32.

    Args:
        logits: (B, T, V); logit_lengths: (B,); targets: (B, S) padded; target_lengths: (B,).
        reduction: `utterance`: -log p(y|x) of each utterance, averaged over the batch (Deep
            Speech 2's cost, and deepspeech.pytorch's); its gradients grow with transcript length,
            which is what the paper's learning rate and clip of 400 were set for. `token`: each
            utterance's cost divided by its transcript length, then averaged (torch's `mean`);
            one to two orders of magnitude smaller, so learning rates and clips differ.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_probs = logits.float().log_softmax(dim=-1).transpose(0, 1)  # (T, B, V)
        per_utterance = F.ctc_loss(
            log_probs,
            targets,
            logit_lengths,
            target_lengths,
            blank=blank_id,
            reduction="none",
            zero_infinity=True,
        )
        if reduction == "token":
            per_utterance = per_utterance / target_lengths.clamp(min=1).to(per_utterance)
        elif reduction != "utterance":
            raise ConfigError(f"ctc reduction must be 'utterance' or 'token', not {reduction!r}")
        return per_utterance.mean()


class CorpusErrorRate(Metric):
    """A corpus error rate from the counts of `ds2hub.inference.evaluate.ErrorRates.score_batch`,
    summed over batches and across ranks: the figure `ds2hub push` reports on the same data."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("edits", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, counts: Counts) -> None:
        self.edits += counts[0]
        self.total += counts[1]

    def compute(self) -> torch.Tensor:
        return self.edits / self.total


class DeepSpeech2Task(L.LightningModule):
    """Trains a `DeepSpeech2` network with CTC on batches from `SpeechDataModule`.

    Args:
        tokenizer: the output vocabulary (linked from the DataModule by the CLI).
        arch: the network architecture.
        features: the front-end settings (linked from the DataModule).
        optimizer: optimizer factory; the paper used SGD with Nesterov momentum, AdamW also works.
        scheduler: optional learning-rate schedule factory, stepped every optimizer step.
        log_examples: how many validation transcripts to print at the end of each validation.
        beam_search: decode validation, test and predict with this `DecoderConfig`; None: greedy.
        ctc_reduction: `utterance` (the paper's) or `token` (`ctc_loss`); learning rates depend on it.
        finetune: start `fit` from a published model (`ds2hub.training.finetune`).

    Logged: `train/loss`, `train/grad_norm` (the total 2-norm before clipping, so a recipe's
    `gradient_clip_val` can be checked against it), `train/audio_sec_per_sec`; `val/` and `test/`
    loss, `cer` and `wer` (or `ser`, `word_metric`), scored as `ds2hub push` scores them.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        arch: DeepSpeech2Config = DeepSpeech2Config(),
        features: FeatureConfig = FeatureConfig(),
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        log_examples: int = 3,
        beam_search: DecoderConfig | None = None,
        ctc_reduction: CTCReduction = "utterance",
        finetune: FineTuneConfig | None = None,
    ) -> None:
        super().__init__()
        if ctc_reduction not in ("utterance", "token"):
            raise ConfigError(
                f"ctc_reduction must be 'utterance' or 'token', not {ctc_reduction!r}"
            )
        self.ctc_reduction = ctc_reduction
        self.tokenizer = (
            tokenizer if isinstance(tokenizer, Tokenizer) else tokenizer_from_config(tokenizer)
        )
        arch = arch if isinstance(arch, DeepSpeech2Config) else DeepSpeech2Config.from_dict(arch)
        features = features if isinstance(features, FeatureConfig) else FeatureConfig(**features)
        check_network_input(arch.n_features, features)
        # The tokenizer and features are linked from the DataModule, so LightningCLI must not read
        # them back from hyper-parameters; they travel in the checkpoint's own "ds2hub" entry.
        # Decoding is not part of the trained model either: leaving it out lets `validate
        # --ckpt-path` decode as the command line says (Lightning re-applies saved hparams).
        self.save_hyperparameters(
            ignore=["tokenizer", "features", "optimizer", "scheduler", "beam_search"]
        )
        self.hparams["arch"] = arch.to_dict()  # plain JSON, no pickled dataclass
        if isinstance(beam_search, dict):
            beam_search = DecoderConfig(**beam_search)
        self.beam_search = beam_search
        self._decoder: TextDecoder | None = None
        self.arch, self.features = arch, features
        self.model = DeepSpeech2(arch, self.tokenizer.vocab_size)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.log_examples = log_examples
        if isinstance(finetune, dict):
            finetune = FineTuneConfig(**finetune)
        if finetune is not None:
            check_freeze_names(self.model, finetune.freeze)
            self.hparams["finetune"] = finetune.to_dict()
        self.finetune = finetune
        self.scoring = ErrorRates(self.tokenizer)  # counts each batch; CorpusErrorRate sums
        self.word_metric = self.scoring.metric
        names = itertools.product(("val", "test"), self.scoring.metrics)
        self.metrics = torch.nn.ModuleDict({f"{s}_{m}": CorpusErrorRate() for s, m in names})
        self._examples: list[tuple[str, str]] = []
        self._last_inputs: tuple[torch.Tensor, torch.Tensor] | None = None  # see _zero_loss
        self._last_batch_end: float | None = None
        self._train_seconds = 0.0
        self.command: str | None = None  # the `ds2hub ...` command line, set by the CLI
        self._fit_started: float | None = None
        # Causal front end: holds the training data's feature statistics (see the section below).
        self.frontend = LogSpectrogram(features) if features.global_stats else None
        if not arch.bidirectional and not features.causal:
            log.warning(
                "a forward-only model with features.normalization: %s cannot stream (its "
                "features depend on the whole utterance); set data.features.normalization: global",
                features.normalization,
            )

    # --- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "tokenizer": self.tokenizer.to_config(),
            "features": self.features.to_dict(),
            # Facts for the model card: how long it trained, on what, with which command.
            "train_seconds": self._train_seconds
            + (time.perf_counter() - self._fit_started if self._fit_started else 0.0),
            "hardware": describe_hardware(self.trainer) if self._trainer is not None else None,
            "command": self.command,
            "finetuned_from": self.finetune.description if self.finetune else None,
            # How validation decoded: the default of a recogniser loaded from this checkpoint.
            "decoding": _portable(self.beam_search),
        }

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.finetune is not None:
            # Only `fit` loads the source model, and before Lightning restores a `--ckpt-path`
            # (which then overwrites these weights), so a resumed run continues from it.
            start_from(self.finetune, self.model, self.arch, self.features, self.tokenizer.vocab)

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()
        self._fit_frontend_statistics()

    def on_fit_end(self) -> None:
        if self._fit_started:
            self._train_seconds += time.perf_counter() - self._fit_started
            self._fit_started = None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._share_frontend_statistics(checkpoint.get("state_dict", {}))
        self._train_seconds = float(checkpoint.get(CHECKPOINT_KEY, {}).get("train_seconds") or 0.0)
        saved = checkpoint.get(CHECKPOINT_KEY, {}).get("tokenizer")
        if saved is not None and tokenizer_from_config(saved).vocab != self.tokenizer.vocab:
            raise ConfigError(
                "the checkpoint was trained with a different tokenizer vocabulary than the recipe's"
            )

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: Any, map_location: Any = None, **kwargs: Any
    ) -> DeepSpeech2Task:
        """Lightning's loader, with the tokenizer and features taken from the checkpoint."""
        checkpoint = read_checkpoint(checkpoint_path)
        extra = checkpoint.get(CHECKPOINT_KEY, {})
        kwargs.setdefault("tokenizer", extra.get("tokenizer"))
        kwargs.setdefault("features", extra.get("features", FeatureConfig().to_dict()))
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)

    # --- causal front end (features.normalization: global) -------------------------------------
    # Streaming models cannot normalise with whole-utterance statistics: they use per-bin
    # statistics of a sample of training utterances, estimated when fit starts and kept in
    # `self.frontend` (so in the checkpoint and hub folder); the DataModule's front end gets a copy.
    FRONTEND_SAMPLE = 256  # training utterances the statistics are estimated from

    def _fit_frontend_statistics(self) -> None:
        if self.frontend is None:
            return
        if not self.frontend.has_statistics:  # a resumed run keeps the checkpoint's
            mean, std, frames = frame_statistics(self._sample_spectra())
            self.frontend.set_statistics(mean, std, frames)
            log.info("feature statistics estimated on %d training frames", frames)
        self._share_frontend_statistics(self.frontend.state_dict(prefix="frontend."))

    def _sample_spectra(self):
        """Floored log spectra of up to FRONTEND_SAMPLE training utterances, without
        augmentation (`SpeechDataModule.training_waveforms`)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        waveforms = getattr(datamodule, "training_waveforms", None)
        if waveforms is None:
            raise ConfigError(
                "features.normalization: global estimates its statistics from the "
                "SpeechDataModule's training split; train with a SpeechDataModule"
            )
        frontend = LogSpectrogram(self.features)
        for waveform in waveforms(self.FRONTEND_SAMPLE):
            if waveform.numel() > self.features.n_fft:
                yield frontend.unnormalized(waveform)

    def _share_frontend_statistics(self, state: dict[str, Any]) -> None:
        """Copies `frontend.*` statistics of a state dict to the DataModule's front end."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        target = getattr(datamodule, "frontend", None)
        if self.frontend is None or target is None or not target.config.global_stats:
            return
        if "frontend.mean" not in state:
            return  # no statistics in the state dict: load_state_dict reports them missing
        target.set_statistics(
            state["frontend.mean"].cpu(), state["frontend.std"].cpu(), int(state["frontend.count"])
        )

    # --- forward and decoding -------------------------------------------------------------------
    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, T) features, (B,) lengths -> (B, T', V) logits, (B,) output lengths."""
        return self.model(features, lengths)

    def decode(self, logits: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Transcripts for a batch of logits: lexicon beam search if configured, else greedy."""
        if self._decoder is None:  # built on first use: a beam search reads its whole lexicon
            self._decoder = text_decoder(self.tokenizer, self.beam_search)
        return self._decoder(logits, lengths)

    # --- steps ----------------------------------------------------------------------------------
    def _loss(
        self, batch: dict[str, Any], stage: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, out_lengths = self(batch["features"], batch["feature_lengths"])
        feasible = ctc_feasible(batch["targets"], batch["target_lengths"], out_lengths)
        skipped = int((~feasible).sum())
        if skipped:
            log.warning(
                "%s: skipped %d utterance(s) whose transcript is too long for CTC", stage, skipped
            )
            self._count(f"{stage}/skipped_ctc", skipped)
        if feasible.any():
            loss = ctc_loss(
                logits[feasible],
                out_lengths[feasible],
                batch["targets"][feasible],
                batch["target_lengths"][feasible],
                self.tokenizer.blank_id,
                self.ctc_reduction,
            )
        else:  # keep the graph (DDP needs every rank to produce gradients) but learn nothing
            loss = self._zero_loss()
        return loss, logits, out_lengths

    def _zero_loss(self) -> torch.Tensor:
        """A loss of 0 that reaches every parameter: under DDP each rank must take part in the
        gradient all-reduce of every step, or the ranks that did wait forever.

        When a previous batch exists, its first utterance also goes through the network, so that
        the collectives of the forward pass (SyncBatchNorm under `sync_batchnorm: true`) match the
        other ranks'. The gradient is zero; the optimiser still steps (momentum, weight decay)."""
        zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        if self._last_inputs is not None:
            logits, _ = self(*self._last_inputs)
            zero = zero + logits.float().sum() * 0.0
        return zero

    def _count(self, name: str, count: int) -> None:
        """Logs a count summed over the epoch."""
        self.log(name, float(count), reduce_fx="sum", on_step=False, on_epoch=True)

    def _empty(self, batch: dict[str, Any], stage: str) -> bool:
        """Counts utterances that failed to decode at load time; True if none is left, in which
        case the step is skipped instead of failing the run."""
        if batch.get("skipped_undecodable"):
            self._count(f"{stage}/skipped_undecodable", batch["skipped_undecodable"])
        return is_empty_batch(batch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self._empty(batch, "train"):
            # Nothing decoded: a zero loss, not None, keeps this rank in step (see `_zero_loss`).
            return self._zero_loss()
        self._last_inputs = (batch["features"][:1].detach(), batch["feature_lengths"][:1])
        loss, _, _ = self._loss(batch, "train")
        bs = batch["features"].size(0)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        now = time.perf_counter()
        if self._last_batch_end is not None:
            # Wall time since the previous step, data loading included: what a user waits for.
            rate = float(batch["durations"].sum()) / max(now - self._last_batch_end, 1e-6)
            self.log("train/audio_sec_per_sec", rate, prog_bar=True, batch_size=bs)
        self._last_batch_end = now
        return loss

    def on_train_epoch_start(self) -> None:
        self._last_batch_end = None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.finetune is not None and self.global_step < self.finetune.freeze_steps:
            drop_frozen_gradients(self.model, self.finetune.freeze)  # frozen: no update this step
            if self.global_step + 1 == self.finetune.freeze_steps:
                log.info(
                    "fine-tuning: %s unfrozen after this step", ", ".join(self.finetune.freeze)
                )
        # Lightning calls this after unscaling (16-mixed) and before clipping: the norm the clip sees.
        norm = grad_norm(self, norm_type=2).get("grad_2.0_norm_total")
        if norm is not None:
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def _evaluate(self, batch: dict[str, Any], stage: str) -> dict[str, list[str]] | None:
        if self._empty(batch, stage):
            return None
        loss, logits, lengths = self._loss(batch, stage)
        hyps, refs, counts = self.scoring.score_batch(self.decode, logits, lengths, batch["texts"])
        bs = len(refs)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log(f"{stage}/utterances", float(bs), reduce_fx="sum", sync_dist=True, batch_size=1)
        for name in self.scoring.metrics:
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(counts[name])
            self.log(f"{stage}/{name}", metric, prog_bar=name == self.word_metric, batch_size=bs)
        if stage == "val" and len(self._examples) < self.log_examples:
            self._examples.extend(list(zip(refs, hyps))[: self.log_examples - len(self._examples)])
        return {"refs": refs, "hyps": hyps}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list[str]] | None:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list[str]] | None:
        return self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        if self._examples and not self.trainer.sanity_checking:
            for ref, hyp in self._examples:
                log.info("ref: %s | hyp: %s", ref, hyp)
        self._examples = []

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[str]:
        if is_empty_batch(batch):
            return []
        logits, out_lengths = self(batch["features"], batch["feature_lengths"])
        return self.decode(logits, out_lengths)

    # --- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = {"scheduler": self.scheduler_factory(optimizer), "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def _portable(decoding: DecoderConfig | None) -> dict[str, Any] | None:
    """`decoding` as a checkpoint stores it: its LM and lexicon files as absolute paths, so a
    recogniser loaded from another folder finds them (`SpeechRecognizer.from_checkpoint`)."""
    if decoding is None:
        return None
    files = {
        name: str(Path(value).expanduser().resolve())
        for name in ("lm", "lexicon")
        if (value := getattr(decoding, name))
    }
    return decoding.replace(**files).to_dict()
