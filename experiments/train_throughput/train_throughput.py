#!/usr/bin/env python3
"""Training throughput of Deep Speech 2 presets, as ratios measured in one run.

For each preset it times full training steps (forward, CTC, backward, optimizer) on synthetic
spectrogram batches and prints:
  - audio seconds trained per wall-clock second,
  - achieved FLOP/s (the step's FLOPs counted by torch.utils.flop_counter),
  - that as a fraction of this machine's dense matmul peak, measured in the same run.
The paper sustained about half of its GPUs' peak; this prints where ds2hub stands.

    python experiments/train_throughput/train_throughput.py                      # CPU, small + paper presets
    python experiments/train_throughput/train_throughput.py --device cuda --precision 16-mixed
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from ds2hub.model import DeepSpeech2, DeepSpeech2Config, get_preset
from ds2hub.training.task import ctc_loss

FRAMES_PER_SECOND = 100  # 10 ms hop


def matmul_peak(device: str, dtype: torch.dtype, n: int = 4096, seconds: float = 3.0) -> float:
    """Dense matmul FLOP/s of this machine (the best of repeated n x n products)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def benchmark(
    config: DeepSpeech2Config,
    device: str,
    precision: str,
    batch: int,
    seconds: float,
    steps: int,
    vocab_size: int = 29,
    tokens_per_second: float = 14.0,
) -> dict:
    """Training steps of `config` on random `batch` x `seconds` spectrograms with random targets
    of `tokens_per_second` (English characters: ~14 per second of speech)."""
    torch.manual_seed(0)
    model = DeepSpeech2(config, vocab_size=vocab_size).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.99, nesterov=True)
    frames = int(seconds * FRAMES_PER_SECOND)
    features = torch.randn(batch, config.n_features, frames, device=device)
    lengths = torch.full((batch,), frames, device=device)
    targets = torch.randint(1, vocab_size, (batch, int(seconds * tokens_per_second)), device=device)
    target_lengths = torch.full((batch,), targets.size(1), device=device)
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], dtype=dtype) if dtype else nullcontext():
            logits, out_lengths = model(features, lengths)
            loss = ctc_loss(logits, out_lengths, targets, target_lengths)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    counter = FlopCounterMode(display=False)
    with counter:
        step()  # also the warm-up
    flops = counter.get_total_flops()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    per_step = (time.perf_counter() - t0) / steps
    return {
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "batch": f"{batch}x{seconds:g}s",
        "audio_s_per_s": batch * seconds / per_step,
        "step_s": per_step,
        "tflops": flops / per_step / 1e12,
        "gflop_per_audio_s": flops / (batch * seconds) / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision", default="32-true", choices=["32-true", "16-mixed", "bf16-mixed"]
    )
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="batch size per preset")
    parser.add_argument("--seconds", type=float, default=5.0, help="utterance length")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    batches = args.batch or [16 if p in ("tiny", "small") else 4 for p in args.presets]
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    peak_dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(
        args.precision, torch.float32
    )
    peak = matmul_peak(args.device, peak_dtype)
    name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"CPU x{torch.get_num_threads()} threads"
    )
    print(
        f"device: {name}, precision {args.precision}; dense matmul peak {peak / 1e12:.3f} TFLOP/s ({peak_dtype})"
    )
    print(
        f"{'preset':<10}{'params':>9}{'batch':>10}{'audio s/s':>11}{'step s':>9}{'TFLOP/s':>9}{'GFLOP/audio s':>15}{'of peak':>9}"
    )
    for preset, batch in zip(args.presets, batches):
        r = benchmark(
            get_preset(preset), args.device, args.precision, batch, args.seconds, args.steps
        )
        print(
            f"{preset:<10}{r['params_M']:>8.1f}M{r['batch']:>10}{r['audio_s_per_s']:>11.1f}{r['step_s']:>9.2f}"
            f"{r['tflops']:>9.3f}{r['gflop_per_audio_s']:>15.1f}{r['tflops'] * 1e12 / peak:>9.1%}"
        )


if __name__ == "__main__":
    main()
