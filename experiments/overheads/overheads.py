#!/usr/bin/env python3
"""ds2hub's overheads against the limit, as ratios measured in one run.

    python experiments/overheads/overheads.py trainer      # Trainer + DataModule vs a bare loop
    python experiments/overheads/overheads.py throughput   # training audio s/s at batch 8 and 32
    python experiments/overheads/overheads.py pipeline     # data-pipeline audio s/s per worker
    python experiments/overheads/overheads.py inference    # transcribe/stream real-time factors

`trainer` builds the digits recipe as `ds2hub fit` does (LightningCLI, the recipe's callbacks and
loggers), takes the training batches its DataModule makes, and times the same steps three ways:
a bare PyTorch loop over the network, optimiser and batches (forward, CTC, backward, the recipe's
gradient clipping, optimiser and scheduler step); the recipe's Trainer over those batches; the
recipe's Trainer over its DataModule (loading, augmentation and features in its worker).

`pipeline` times the LibriSpeech recipe's data path (FLAC decoding, its augmentation, the front
end, padding) in one process, one thread: what one DataLoader worker delivers. Against it, what
the paper-size model consumes on an H100 at 40 % of its dense bf16 peak, from its training FLOPs
per audio second (counted here by torch.utils.flop_counter).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
H100_BF16_DENSE_TFLOPS = 989.4  # NVIDIA H100 SXM datasheet, dense (no sparsity)
PAPER_UTILISATION = 0.40


# --- trainer -------------------------------------------------------------------------------------
def build_cli(overrides: list[str]):
    """The digits recipe as `ds2hub fit --config digits ...` builds it, without running it."""
    from ds2hub.cli.lightning import DS2CLI
    from ds2hub.cli.recipes import resolve_recipe_names
    from ds2hub.training.data import SpeechDataModule
    from ds2hub.training.task import DeepSpeech2Task

    args = resolve_recipe_names(["--config", "digits", *overrides])
    return DS2CLI(
        DeepSpeech2Task,
        SpeechDataModule,
        argv=args,
        args=args,
        run=False,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


class StepClock:
    """Lightning callback: the time at the end of every training batch."""

    def __init__(self) -> None:
        import lightning.pytorch as pl

        class _Clock(pl.Callback):
            def on_train_batch_end(cb, trainer, module, outputs, batch, batch_idx):  # noqa: N805
                self.ends.append(time.perf_counter())

        self.ends: list[float] = []
        self.callback = _Clock()

    def per_step(self, skip: int) -> float:
        gaps = np.diff(self.ends[skip:])
        return float(np.median(gaps))


def bare_loop(task, batches: list[dict], clip: float | None, skip: int) -> float:
    """Median seconds per step of a plain loop: the recipe's network, optimiser, scheduler,
    loss and clipping, nothing else."""
    from ds2hub.training.task import ctc_loss

    model = task.model.train()
    configured = task.configure_optimizers()
    if isinstance(configured, dict):
        optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    else:
        optimizer, scheduler = configured, None
    blank = task.tokenizer.blank_id
    ends = []
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        logits, lengths = model(batch["features"], batch["feature_lengths"])
        loss = ctc_loss(
            logits, lengths, batch["targets"], batch["target_lengths"], blank, task.ctc_reduction
        )
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        ends.append(time.perf_counter())
    return float(np.median(np.diff(ends[skip:])))


def trainer_overhead(args: argparse.Namespace) -> None:
    import lightning.pytorch as pl

    steps, skip = args.steps, 3
    overrides = [
        "--data.batch_size", str(args.batch), "--trainer.max_steps", str(steps),
        "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", str(args.progress_bar).lower(),
        "--trainer.default_root_dir", args.work, "--trainer.log_every_n_steps", "10",
    ]  # fmt: skip
    overrides += args.extra

    def fresh():
        pl.seed_everything(2016, verbose=False)
        return build_cli(overrides)

    cli = fresh()
    cli.datamodule.setup("fit")
    loader = cli.datamodule.train_dataloader()
    batches = []
    for batch in loader:  # the DataModule's own batches (its sampler, augmentation, collation)
        batches.append(batch)
        if len(batches) == steps:
            break
    audio = statistics.median(float(b["durations"].sum()) for b in batches[skip:])
    clip = cli.trainer.gradient_clip_val
    print(
        f"digits recipe, batch {args.batch}, {len(batches)} steps ({skip} warm-up), "
        f"{audio:.1f} audio s a batch (median), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    # The three paths in turn, `rounds` times; each keeps its fastest round (the machine is
    # shared: a slow round is noise, not the path).
    results: dict[str, float] = {}

    def keep(name: str, per_step: float) -> None:
        results[name] = min(results.get(name, math.inf), per_step)

    for _ in range(args.rounds):
        keep("bare loop", bare_loop(fresh().model, batches, clip, skip))

        cli = fresh()
        clock = StepClock()
        cli.trainer.callbacks.append(clock.callback)
        # batch_size=None: the DataLoader hands over each prepared batch as it is.
        same = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
        cli.trainer.fit(cli.model, train_dataloaders=same)
        keep("Trainer, same batches", clock.per_step(skip))

        cli = fresh()
        clock = StepClock()
        cli.trainer.callbacks.append(clock.callback)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        workers = cli.datamodule.num_workers
        keep(
            f"Trainer + DataModule ({workers} worker{'s' if workers != 1 else ''})",
            clock.per_step(skip),
        )

    base = results["bare loop"]
    print(f"{'path':<36}{'s / step':>10}{'audio s/s':>11}{'vs bare':>9}")
    for name, per_step in results.items():
        print(f"{name:<36}{per_step:>10.4f}{audio / per_step:>11.1f}{per_step / base:>9.3f}")


# --- throughput ----------------------------------------------------------------------------------
def throughput(args: argparse.Namespace) -> None:
    """Bare training steps of one network at several batch sizes, on batches the digits
    DataModule makes (real audio lengths and transcripts)."""
    import lightning.pytorch as pl

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'batch':>6}{'audio s / batch':>17}{'s / step':>10}{'audio s/s':>11}")
    for size in args.batches:
        pl.seed_everything(2016, verbose=False)
        overrides = ["--data.batch_size", str(size), "--trainer.default_root_dir", args.work]
        cli = build_cli(overrides + args.extra)
        cli.datamodule.setup("fit")
        batches = []
        for batch in cli.datamodule.train_dataloader():
            batches.append(batch)
            if len(batches) == args.steps:
                break
        per_step = bare_loop(cli.model, batches, cli.trainer.gradient_clip_val, 2)
        audio = statistics.median(float(b["durations"].sum()) for b in batches[2:])
        print(f"{size:>6}{audio:>17.1f}{per_step:>10.4f}{audio / per_step:>11.1f}")


# --- pipeline ------------------------------------------------------------------------------------
def long_flac_corpus(root: Path, count: int, seconds: float) -> Path:
    """An audiofolder of `count` FLAC files of about `seconds` each (LibriSpeech's utterances are
    12 s on average), made of consecutive FSDD recordings (real speech) with their transcripts."""
    rows = list(csv.DictReader(open(SHARED / "fsdd_digits" / "metadata.csv", encoding="utf-8")))
    k = 0
    for split, n in (("train", count), ("validation", 2)):  # (setup("fit") reads both)
        k = _write_split(root / split, rows, k, n, seconds)
    return root


def _write_split(folder: Path, rows: list[dict], k: int, count: int, seconds: float) -> int:
    folder.mkdir(parents=True)
    out = []
    for i in range(count):
        waves, words = [], []
        while sum(w.size for w in waves) < seconds * 16000:
            row = rows[k % len(rows)]
            k += 1
            wave, rate = sf.read(SHARED / "fsdd_digits" / row["file_name"], dtype="float32")
            assert rate == 16000
            waves.append(wave)
            words.append(row["transcription"])
        name = f"utt{i:04d}.flac"
        sf.write(folder / name, np.concatenate(waves), 16000)
        out.append({"file_name": name, "text": " ".join(words)})
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["file_name", "text"])
        writer.writeheader()
        writer.writerows(out)
    return k


def paper_flops_per_audio_second() -> float:
    """Training FLOPs (forward + backward) of the paper preset per second of audio."""
    from torch.utils.flop_counter import FlopCounterMode

    from ds2hub.model import DeepSpeech2, get_preset
    from ds2hub.training.task import ctc_loss

    config = get_preset("paper")
    model = DeepSpeech2(config, vocab_size=29)
    seconds, frames = 4.0, 400
    features = torch.randn(1, config.n_features, frames)
    lengths = torch.tensor([frames])
    targets = torch.randint(1, 29, (1, 56))
    with FlopCounterMode(display=False) as counter:
        logits, out = model(features, lengths)
        ctc_loss(logits, out, targets, torch.tensor([56])).backward()
    return counter.get_total_flops() / seconds


def pipeline(args: argparse.Namespace) -> None:
    import yaml

    from ds2hub.features import FeatureConfig
    from ds2hub.tokenizers import CharTokenizer
    from ds2hub.training.data import SpeechDataModule
    from ds2hub.training.data.augment import build_transforms

    torch.set_num_threads(1)  # as in a DataLoader worker
    recipe = yaml.safe_load((REPO / "recipes" / "librispeech.yaml").read_text())["data"]
    with tempfile.TemporaryDirectory() as tmp:
        root = long_flac_corpus(Path(tmp), args.utterances, 12.0)
        results = {}
        recipe_augment = recipe.get("augment") or []
        for name, augment, on_device in (
            ("features only", [], False),
            ("recipe (+ Noise 40 %)", recipe_augment, False),
            ("recipe, frontend_on_device", recipe_augment, True),
        ):
            dm = SpeechDataModule(
                path=str(root), text_column="text", tokenizer=CharTokenizer(),
                features=FeatureConfig(**(recipe.get("features") or {})),
                augment=build_transforms(augment),
                batch_size=16, num_workers=0, max_duration=40.0, frontend_on_device=on_device,
            )  # fmt: skip
            dm.setup("fit")
            loader = dm.train_dataloader()
            next(iter(loader))  # warm-up
            t0 = time.perf_counter()
            audio = sum(float(b["durations"].sum()) for b in loader)
            results[name] = audio / (time.perf_counter() - t0)
    flops = paper_flops_per_audio_second()
    need = H100_BF16_DENSE_TFLOPS * 1e12 * PAPER_UTILISATION / flops
    print(f"paper preset: {flops / 1e9:.1f} GFLOP per training audio second")
    print(
        f"H100 at {PAPER_UTILISATION:.0%} of {H100_BF16_DENSE_TFLOPS:g} TFLOP/s bf16 consumes "
        f"{need:,.0f} audio s/s"
    )
    workers = recipe.get("num_workers", 8)
    print(
        f"{'worker path':<26}{'audio s/s/worker':>18}{'workers needed':>16}{f'x{workers} / need':>12}"
    )
    for name, rate in results.items():
        print(f"{name:<26}{rate:>18.1f}{math.ceil(need / rate):>16}{workers * rate / need:>12.2f}")


# --- inference -----------------------------------------------------------------------------------
def inference(args: argparse.Namespace) -> None:
    """Real-time factor (compute seconds per audio second) on one thread, untrained weights of
    each preset (the work does not depend on the weights): `transcribe` of 10 s utterances and
    `stream` of the same audio in 100 ms chunks."""
    from ds2hub.inference.recognizer import SpeechRecognizer
    from ds2hub.model import DeepSpeech2Config, get_preset
    from ds2hub.tokenizers import CharTokenizer

    torch.set_num_threads(1)
    rows = list(csv.DictReader(open(SHARED / "fsdd_digits" / "metadata.csv", encoding="utf-8")))
    wave = np.concatenate(
        [sf.read(SHARED / "fsdd_digits" / r["file_name"], dtype="float32")[0] for r in rows[:30]]
    )[: 10 * 16000]
    seconds = wave.size / 16000
    print(f"one thread, {seconds:.1f} s of speech, torch {torch.__version__}")
    print(f"{'preset':<18}{'transcribe RTF':>15}{'stream RTF':>12}")
    for name in args.presets:
        recipe_file = REPO / "recipes" / f"{name}.yaml"
        if recipe_file.exists():  # a recipe's network
            import yaml

            recipe = yaml.safe_load(recipe_file.read_text())
            arch = DeepSpeech2Config.from_dict(recipe["model"]["arch"])
        else:
            arch = get_preset(name)
        streaming = not arch.bidirectional
        features = {"normalization": "global"} if streaming else {}
        torch.manual_seed(0)
        rec = SpeechRecognizer(arch.to_dict(), features, CharTokenizer())
        if streaming:  # statistics as training would estimate them (their values cost nothing)
            bins = rec.frontend.config.n_bins
            rec.frontend.set_statistics(torch.zeros(bins), torch.ones(bins), 1)
        rec.transcribe(wave, sample_rate=16000)  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            rec.transcribe(wave, sample_rate=16000)
        batch_rtf = (time.perf_counter() - t0) / args.repeats / seconds
        stream_rtf = float("nan")
        if streaming:
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                stream = rec.stream()
                for start in range(0, wave.size, 1600):
                    stream.accept(wave[start : start + 1600])
                stream.finish()
            stream_rtf = (time.perf_counter() - t0) / args.repeats / seconds
        print(f"{name:<18}{batch_rtf:>15.4f}{stream_rtf:>12.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("trainer")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--steps", type=int, default=40)
    t.add_argument("--progress-bar", action="store_true")
    t.add_argument("--rounds", type=int, default=2)
    p = sub.add_parser("throughput")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    p.add_argument("--steps", type=int, default=12)
    q = sub.add_parser("pipeline")
    q.add_argument("--utterances", type=int, default=48)
    i = sub.add_parser("inference")
    i.add_argument(
        "--presets", nargs="+", default=["digits", "digits_streaming", "paper-streaming"],
        help="presets or recipe names",
    )  # fmt: skip
    i.add_argument("--repeats", type=int, default=3)
    for s in (t, p):
        s.add_argument("extra", nargs="*", help="more ds2hub fit options (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        args.work = work
        os.environ.setdefault("WANDB_MODE", "disabled")
        {"trainer": trainer_overhead, "throughput": throughput, "pipeline": pipeline,
         "inference": inference}[args.what](args)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
