#!/usr/bin/env python3
"""The paper's deployment claim in miniature: a forward-only model with a row convolution against a
bidirectional one of about the same size, trained on the same data for the same wall time.

Deep Speech 2 (section 7) reports that forward-only recurrent layers with a row convolution lose
little accuracy against bidirectional ones while transcribing audio as it arrives. This script
trains both digit demos (recipes/digits.yaml: bidirectional GRUs, utterance normalisation;
recipes/digits_streaming.yaml: forward-only GRUs + row convolution, causal front end) with the
console script on the same batches for the same number of optimiser steps (`--steps`; or the
same wall time, `--minutes`), then scores the checkpoint with the best validation WER of each on
the test split (voices neither saw in training): greedy decoding, whole utterances, and for the
forward-only model also streamed in `--chunk-ms` chunks through `recognizer.stream()`. Prints a
table with each run's wall time.

A step budget, not a time budget, by default: on a machine shared with other work the steps a
minute buys vary several-fold, and both networks cost about the same per step. Short budgets
shorten the recipes' warm-up (`--warmup-steps`), the same for both.

    uv run python experiments/streaming_accuracy/streaming_accuracy.py --steps 150
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torchmetrics.text import CharErrorRate, WordErrorRate

from ds2hub import from_pretrained, load_audio

REPO = Path(__file__).resolve().parents[2]
RECIPES = {
    "bidirectional": REPO / "recipes" / "digits.yaml",
    "forward-only + row conv": REPO / "recipes" / "digits_streaming.yaml",
}


def train(
    recipe: Path, root: Path, steps: int, minutes: float | None, warmup_steps: int
) -> tuple[Path, dict]:
    """Fits `recipe` for `steps` optimiser steps (or `minutes` of wall time); returns the best
    checkpoint and run facts."""
    budget: dict = {"max_epochs": 1000, "max_steps": steps}
    if minutes is not None:
        budget = {
            "max_epochs": 1000,
            "max_time": f"00:00:{int(minutes):02d}:{round(minutes % 1 * 60):02d}",
        }
    overlay = {
        "trainer": {
            **budget,
            "default_root_dir": str(root),
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(root), "name": "run"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/wer", "mode": "min", "filename": "best"},
                }
            ],
        }
    }
    overlay_path = root / "overlay.yaml"
    overlay_path.write_text(yaml.safe_dump(overlay))
    command = [
        sys.executable, "-m", "ds2hub", "fit", "--config", str(recipe),
        "--config", str(overlay_path), "--data.path", str(REPO / "recipes" / "digits"),
        "--model.scheduler.init_args.warmup_steps", str(warmup_steps),
        "--model.scheduler.init_args.anneal_steps", str(max(1, steps // 3)),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    seconds = time.perf_counter() - start
    best = next(root.glob("run/version_*/checkpoints/best.ckpt"))
    metrics = list(csv.DictReader(open(next(root.glob("run/version_*/metrics.csv")))))
    steps = max(int(row["step"]) for row in metrics if row.get("step"))
    epochs = max(int(row["epoch"]) for row in metrics if row.get("epoch")) + 1
    return best, {"train_s": seconds, "steps": steps, "epochs": epochs}


def score(checkpoint: Path, chunk_samples: int | None) -> dict[str, float]:
    """Test-split WER/CER of a checkpoint, whole utterances or streamed in chunks."""
    recognizer = from_pretrained(checkpoint)
    tokenizer = recognizer.tokenizer
    decode = recognizer.text_decoder()
    wer, cer = WordErrorRate(), CharErrorRate()
    test = REPO / "recipes" / "digits" / "test"
    start = time.perf_counter()
    audio_seconds = 0.0
    for row in csv.DictReader(open(test / "metadata.csv")):
        audio = load_audio(test / row["file_name"])
        audio_seconds += audio.numel() / 16_000
        with torch.inference_mode():
            if chunk_samples is None:
                features = recognizer.frontend(audio)
                logits, lengths = recognizer.model(features[None], torch.tensor([features.size(1)]))
                hyp = decode(logits, lengths)[0]
            else:
                session = recognizer.stream()
                for i in range(0, audio.numel(), chunk_samples):
                    session.accept(audio[i : i + chunk_samples])
                hyp = session.finish()
        ref = tokenizer.reference(row["text"])
        wer.update([tokenizer.reference(hyp)], [ref])
        cer.update([tokenizer.reference(hyp)], [ref])
    return {
        "wer": float(wer.compute()),
        "cer": float(cer.compute()),
        "rtf": (time.perf_counter() - start) / audio_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="optimiser steps per model")
    parser.add_argument(
        "--minutes", type=float, default=None, help="train for this wall time instead of --steps"
    )
    parser.add_argument("--warmup-steps", type=int, default=30, help="learning-rate warm-up")
    parser.add_argument("--chunk-ms", type=int, default=160, help="streaming chunk length")
    parser.add_argument("--out", type=Path, default=None, help="keep runs here (default: temp)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    base = args.out or Path(tempfile.mkdtemp(prefix="streaming_accuracy_"))
    rows = []
    for name, recipe in RECIPES.items():
        root = base / name.replace(" ", "_").replace("+", "plus")
        root.mkdir(parents=True, exist_ok=True)
        checkpoint, facts = train(recipe, root, args.steps, args.minutes, args.warmup_steps)
        params = from_pretrained(checkpoint).num_parameters
        rows.append((name, "whole", params, facts, score(checkpoint, None)))
        if "forward" in name:
            chunk = 16_000 * args.chunk_ms // 1000
            rows.append(
                (name, f"streamed {args.chunk_ms} ms", params, facts, score(checkpoint, chunk))
            )
    budget = f"{args.minutes:g} min" if args.minutes is not None else f"{args.steps} steps"
    print(f"\nTest split of recipes/digits (200 utterances), {budget} of training each")
    print("| model | decoding | parameters | steps | train time | test WER | test CER |")
    print("|---|---|---|---|---|---|---|")
    for name, how, params, facts, result in rows:
        print(
            f"| {name} | {how} | {params / 1e6:.2f}M | {facts['steps']} "
            f"| {facts['train_s'] / 60:.1f} min | {result['wer']:.1%} | {result['cer']:.1%} |"
        )
    (base / "results.json").write_text(
        json.dumps([dict(model=n, decoding=h, params=p, **f, **r) for n, h, p, f, r in rows])
    )
    print(f"(runs and results.json in {base}; greedy decoding)")


if __name__ == "__main__":
    main()
