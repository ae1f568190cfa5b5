"""Shared by the training-findings scripts: one short training through ds2hub's command line (the
user's path: `ds2hub fit`, then `ds2hub test` on the last weights) and its figures.

Each run is stored under `runs/findings/<name>/` with a `result.json`; a run whose result exists is
not trained again, so a script interrupted half-way picks up where it stopped.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ds2hub.model import DeepSpeech2, DeepSpeech2Config
from ds2hub.tokenizers import CharTokenizer

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BASE = HERE / "base.yaml"
OUT = REPO / "runs" / "findings"


def arch_overrides(config: DeepSpeech2Config) -> list[str]:
    """`--model.arch.*` options that set every field of `config`."""
    return [
        f"--model.arch.{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in config.to_dict().items()
    ]


def parameters(config: DeepSpeech2Config, vocab_size: int | None = None) -> int:
    """Trainable parameters of the network (character vocabulary unless given)."""
    vocab = vocab_size or CharTokenizer().vocab_size
    return sum(p.numel() for p in DeepSpeech2(config, vocab_size=vocab).parameters())


def hidden_for_budget(config: DeepSpeech2Config, budget: int, vocab_size: int | None = None) -> int:
    """The `rnn_hidden` (a multiple of 8) whose network is closest to `budget` parameters."""

    def size(hidden: int) -> int:
        return parameters(replace(config, rnn_hidden=hidden), vocab_size)

    low, high = 1, 256  # in multiples of 8; the count grows with the width: bisect
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if size(8 * mid) <= budget else (low, mid)
    return min((8 * low, 8 * high), key=lambda h: abs(size(h) - budget))


def _metrics(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _column(rows: list[dict[str, str]], name: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "")]


def run(name: str, options: list[str], base: Path = BASE) -> dict[str, Any]:
    """Trains `name` (`ds2hub fit --config base *options`), tests its last weights, and returns
    {name, params, minutes, steps, train_loss, val_cer, val_wer (curves as [step, value]),
    test_cer, test_wer}. Stored in runs/findings/<name>/result.json and reused from there."""
    folder = OUT / name
    result_file = folder / "result.json"
    if result_file.exists():
        stored = json.loads(result_file.read_text())
        if stored["options"] != options:  # a run of that name made with other settings
            raise SystemExit(f"{folder} holds a run with other options; move it away to re-run")
        return stored
    logger = ["--trainer.logger.init_args.save_dir", str(OUT), "--trainer.logger.init_args.name"]
    fit = [sys.executable, "-m", "ds2hub", "fit", "--config", str(base), *options]
    start = time.perf_counter()
    _call([*fit, *logger, name, "--trainer.logger.init_args.version", "fit"], folder)
    minutes = (time.perf_counter() - start) / 60
    fitted = folder / "fit"
    test = [sys.executable, "-m", "ds2hub", "test", "--config", str(fitted / "config.yaml")]
    last = fitted / "checkpoints" / "last.ckpt"
    _call([*test, "--ckpt_path", str(last), *logger, name, "--trainer.logger.init_args.version",
           "test"], folder)  # fmt: skip
    rows, tested = _metrics(fitted), _metrics(folder / "test")
    result = {
        "name": name,
        "options": options,
        "minutes": round(minutes, 2),
        "train_loss": _column(rows, "train/loss"),
        "val_loss": _column(rows, "val/loss"),
        "val_cer": _column(rows, "val/cer"),
        "val_wer": _column(rows, "val/wer"),
        "test_cer": _column(tested, "test/cer")[-1][1],
        "test_wer": _column(tested, "test/wer")[-1][1],
    }
    result_file.write_text(json.dumps(result))
    return result


def _call(command: list[str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "log.txt", "a") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        step = command[command.index("ds2hub") + 1]  # fit or test
        raise SystemExit(f"{step} of {folder.name} failed; see {folder / 'log.txt'}")


def mean_sd(values: list[float], scale: float = 100.0) -> str:
    """`mean ± sd` of `values` x `scale` (percent by default; sd over runs; a lone run shows its
    value)."""
    m = statistics.mean(values) * scale
    if len(values) < 2:
        return f"{m:.1f}"
    return f"{m:.1f} ± {statistics.stdev(values) * scale:.1f}"


def finite(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values)


# base.yaml's network: 2 x 2D conv (8 channels), 2 bidirectional GRU layers; every comparison
# keeps its parameter count (the paper's Table 1 keeps 38M for every depth) by sizing rnn_hidden.
BASE_ARCH = DeepSpeech2Config(
    conv_channels=(8, 8),
    conv_kernel_freq=(21, 11),
    conv_kernel_time=(11, 5),
    rnn_layers=2,
    rnn_hidden=192,
)


def budgeted(**changes: Any) -> DeepSpeech2Config:
    """BASE_ARCH with `changes`, its rnn_hidden sized to BASE_ARCH's parameter count."""
    config = replace(BASE_ARCH, **changes)
    return replace(config, rnn_hidden=hidden_for_budget(config, parameters(BASE_ARCH)))


def seeded(seed: int) -> list[str]:
    """Options that seed both the weights and the batch order."""
    return [f"--seed_everything={seed}", f"--data.seed={seed}"]


def at_step(curve: list[list[float]], step: int) -> float:
    """The curve's value logged at `step` (validation runs at the end of steps 50, 100, ...;
    Lightning logs it under the step count minus one)."""
    return next(v for s, v in curve if s + 1 >= step)


def last_loss(result: dict[str, Any], points: int = 5) -> float:
    """Mean of the last `points` logged training losses (one every 10 steps)."""
    return statistics.mean(v for _, v in result["train_loss"][-points:])


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


NETWORK_HEADER = ["network", "params", "hidden", "final train loss (per seed)",
                  "val CER % at step 100", "test CER %", "test CER % per seed", "test WER %",
                  "minutes (per seed)"]  # fmt: skip


def compare_networks(variants: dict[str, dict[str, Any]], seeds: list[int]) -> None:
    """Trains each variant (`budgeted(**changes)`, SortaGrad on) for each seed and prints one
    table row per variant as it finishes, then the whole table."""
    rows = []
    for name, changes in variants.items():
        arch = budgeted(**changes)
        results = [
            run(f"{name}-sorta-s{seed}", [*seeded(seed), *arch_overrides(arch)]) for seed in seeds
        ]
        rows.append([
            name, f"{parameters(arch) / 1e6:.2f}M", arch.rnn_hidden,
            " / ".join(f"{last_loss(r):.1f}" for r in results),
            mean_sd([at_step(r["val_cer"], 100) for r in results]),
            mean_sd([r["test_cer"] for r in results]),
            " / ".join(f"{100 * r['test_cer']:.1f}" for r in results),
            mean_sd([r["test_wer"] for r in results]),
            " / ".join(f"{r['minutes']:.1f}" for r in results),
        ])  # fmt: skip
        print(table(NETWORK_HEADER, rows[-1:]), flush=True)
    print(f"\nseeds {seeds}\n" + table(NETWORK_HEADER, rows))
