"""Finding 5 (Deep Speech 2, its data-parallel scaling, Figure 4): weak scaling of data-parallel training.
Each process keeps its own minibatch (16 utterances here), so N processes train on N times the
audio per step; with perfect scaling, each process's throughput stays that of a lone process.

`ds2hub fit` with `--trainer.strategy ddp` (gloo on CPUs, NCCL on GPUs) for a fixed number of
steps per process count; the throughput is the median of the logged `train/audio_sec_per_sec`
(rank 0's batch audio over its step's wall time, data loading included) after the first 10 steps.
Each CPU process gets `--threads` OpenMP threads, so 2 processes x 1 thread fill this machine's 2
cores as 1 process x 2 threads does.

    uv run python experiments/training_findings/weak_scaling.py                      # CPU, 1 and 2 processes
    uv run python experiments/training_findings/weak_scaling.py --accelerator gpu --devices 1 2 4 8
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BASE, REPO, table


def throughput(accelerator: str, devices: int, threads: int, steps: int) -> tuple[float, float]:
    """(median audio seconds per second of one process, wall minutes of the run)."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, "-m", "ds2hub", "fit", "--config", str(BASE),
            "--trainer.accelerator", accelerator, "--trainer.devices", str(devices),
            "--trainer.strategy", "ddp" if devices > 1 else "auto",
            "--trainer.use_distributed_sampler", "false", "--trainer.max_steps", str(steps),
            "--trainer.limit_val_batches", "0", "--data.sortagrad", "false",
            "--trainer.logger.init_args.save_dir", out, "--trainer.default_root_dir", out,
            "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        minutes = (time.perf_counter() - start) / 60
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        rows = list(csv.DictReader(open(next(Path(out).rglob("metrics.csv")))))
    rates = [
        float(r["train/audio_sec_per_sec"])
        for r in rows
        if r.get("train/audio_sec_per_sec") and int(r["step"]) >= 10
    ]
    return statistics.median(rates), minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads per process")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    rows, alone = [], None
    for n in args.devices:
        rate, minutes = throughput(args.accelerator, n, args.threads, args.steps)
        alone = alone or rate
        rows.append([n, f"{rate:.1f}", f"{n * rate:.1f}", f"{rate / alone:.2f}", f"{minutes:.1f}"])
        print(table(HEADER, rows[-1:]), flush=True)
    print(f"\n{args.accelerator}, {args.threads} thread(s) per process, {args.steps} steps\n")
    print(table(HEADER, rows))


HEADER = ["processes", "audio s/s per process", "audio s/s in all", "per-process vs 1",
          "run minutes"]  # fmt: skip

if __name__ == "__main__":
    main()
