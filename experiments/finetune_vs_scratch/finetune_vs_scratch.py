#!/usr/bin/env python3
"""Fine-tuning the English digits model vs training from scratch on the German corpus.

Runs `ds2hub fit` on the plugin's two recipes, identical but for `model.finetune`
(`german_digits_finetune` starts from the English model, `german_digits` from random weights),
and prints for each: validation WER after each validation (every 25 steps), the first step and
the wall time (since training started, validations included) at which it reaches `--target`.
Each run stops there (`--run-on` trains the recipes' full 600 steps instead). The runs write to
runs/german_digits{,_finetune}/ like any `ds2hub fit`.

Run from a folder holding `german-digits/` (python -m ds2hub_german.make_corpus) and the English
model (a folder written by `ds2hub push`, a hub id or a .ckpt), on an otherwise idle machine:

    python experiments/finetune_vs_scratch/finetune_vs_scratch.py --english english-digits
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import lightning as L

NAME = Path(__file__).stem


class ValidationClock(L.Callback):
    """Appends `{"step", "seconds", "wer"}` to a JSON-lines file after every validation;
    `seconds` counts from the start of training (the fine-tuned model's loading is before it)."""

    def __init__(self, path: str, stop_below: float | None = None) -> None:
        self.path = Path(path)
        self.stop_below = stop_below  # end the run at the first validation WER <= this
        self.start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val/wer" not in trainer.callback_metrics:
            return
        record = {
            "step": trainer.global_step,
            "seconds": round(time.perf_counter() - self.start, 1),
            "wer": float(trainer.callback_metrics["val/wer"]),
        }
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.stop_below is not None and record["wer"] <= self.stop_below:
            trainer.should_stop = True


def run(recipe: str, out: Path, extra: list[str], stop_below: float | None) -> list[dict]:
    from ds2hub.cli.main import run_cli

    out.mkdir(parents=True, exist_ok=True)
    record = out / f"{recipe}.jsonl"
    record.unlink(missing_ok=True)
    clock = {
        "class_path": f"{NAME}.ValidationClock",
        "init_args": {"path": str(record), "stop_below": stop_below},
    }
    # `callbacks+=` keeps the recipe's own callbacks (checkpointing) and adds the clock.
    run_cli(
        ["fit", "--config", recipe, "--trainer.callbacks+=" + json.dumps(clock), *extra]
    )  # fmt: skip
    return [json.loads(line) for line in record.read_text().splitlines()]


def first_reaching(records: list[dict], target: float) -> dict | None:
    return next((r for r in records if r["wer"] <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--english", default="english-digits", help="the model to fine-tune from")
    parser.add_argument("--corpus", default="german-digits")
    parser.add_argument("--target", type=float, default=0.20, help="validation WER to reach")
    parser.add_argument(
        "--run-on",
        action="store_true",
        help="train the full recipe instead of stopping at --target",
    )
    parser.add_argument(
        "--runs", nargs="+", choices=["fine-tuned", "scratch"], default=["fine-tuned", "scratch"]
    )
    parser.add_argument(
        "--freeze-steps", type=int, default=None, help="override the fine-tuning recipe's"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="override the recipes' length")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/finetune_vs_scratch"), help="records"
    )
    args, overrides = parser.parse_known_args()  # the rest goes to both `ds2hub fit` runs
    sys.path.insert(0, str(Path(__file__).parent))  # so the CLI can import ValidationClock
    extra = ["--data.path", args.corpus, *overrides]
    if args.max_steps:
        extra += ["--trainer.max_steps", str(args.max_steps)]
    stop = None if args.run_on else args.target
    results = {}
    if "fine-tuned" in args.runs:
        finetune = [*extra, "--model.finetune.source", args.english]
        if args.freeze_steps is not None:
            finetune += ["--model.finetune.freeze_steps", str(args.freeze_steps)]
        results["fine-tuned"] = run("german_digits_finetune", args.out, finetune, stop)
    if "scratch" in args.runs:
        results["scratch"] = run("german_digits", args.out, extra, stop)
    steps = sorted({r["step"] for rs in results.values() for r in rs})
    print(f"\nvalidation WER (%) by step; target {100 * args.target:.0f} %")
    print("step  " + "  ".join(f"{name:>10}" for name in results))
    for step in steps:
        row = [next((r["wer"] for r in rs if r["step"] == step), None) for rs in results.values()]
        print(
            f"{step:4d}  "
            + "  ".join(f"{100 * w:10.1f}" if w is not None else " " * 10 for w in row)
        )
    for name, records in results.items():
        hit = first_reaching(records, args.target)
        best = min(records, key=lambda r: r["wer"])
        reached = (
            f"reaches {100 * args.target:.0f} % at step {hit['step']} ({hit['seconds']:.0f} s)"
            if hit
            else f"does not reach {100 * args.target:.0f} %"
        )
        print(
            f"{name}: {reached}; best {100 * best['wer']:.1f} % at step {best['step']}; "
            f"{records[-1]['step']} steps in {records[-1]['seconds']:.0f} s"
        )


if __name__ == "__main__":
    main()
