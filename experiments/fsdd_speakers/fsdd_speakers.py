"""Why one FSDD speaker is harder than the others: durations, cut ends, band energy, and a
checkpoint's errors on the held-out speaker by duration.

Per speaker: mean word duration; how often the recording is cut tight (the first or last 20 ms
within 10 dB of the loudest 10 ms frame); the share of power above 4 kHz (FSDD is 8 kHz audio,
the shipped synthetic voices are wideband). With `--ckpt`, the held-out speaker's errors by
duration and the commonest confusions; with `--test-time`, the same checkpoint on that speaker's
audio slowed down (tempo 0.7), padded with 0.08 or 0.25 s of quiet noise on each end (a pause),
and equalised (a peaking band of +-8 dB at 2 kHz, Q 2: another microphone's colouring).
`--speaker` scores another speaker, e.g. one the checkpoint was trained on.

    uv run python experiments/fsdd_speakers/fsdd_speakers.py [--data ../shared/data/fsdd_digits]
    uv run python experiments/fsdd_speakers/fsdd_speakers.py --ckpt runs/fsdd_digits/fsdd_digits/version_0/checkpoints/best-wer.ckpt --test-time
"""

from __future__ import annotations

import argparse
import collections
import csv
from pathlib import Path

import torch

from ds2hub.audio import SAMPLE_RATE, load_audio
from ds2hub.training.data.augment import change_tempo, equalize

FRAME = SAMPLE_RATE // 100  # 10 ms


def edge_db(wave: torch.Tensor) -> float:
    """Power of the first or last 20 ms (the louder) relative to the loudest 10 ms frame, in dB."""
    frames = wave[: wave.numel() // FRAME * FRAME].view(-1, FRAME).pow(2).mean(dim=1)
    edge = torch.maximum(frames[:2].max(), frames[-2:].max())
    return float(10 * torch.log10(edge / frames.max() + 1e-12))


def high_band_db(wave: torch.Tensor) -> float:
    """Share of the power above 4 kHz, in dB."""
    power = torch.fft.rfft(wave).abs().pow(2)
    cut = int(4000 * wave.numel() / SAMPLE_RATE)
    return float(10 * torch.log10(power[cut:].sum() / power.sum() + 1e-12))


def describe(rows: list[dict], waves: list[torch.Tensor]) -> None:
    by_speaker: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)
    for row, wave in zip(rows, waves):
        stats = (float(row["duration"]), edge_db(wave), high_band_db(wave))
        by_speaker[row["speaker_id"]].append(stats)
    print(f"{'speaker':<10} {'words':>5} {'mean s':>7} {'cut tight':>10} {'>4 kHz dB':>10}")
    for speaker, stats in sorted(by_speaker.items()):
        t = torch.tensor(stats)
        tight = float((t[:, 1] > -10).float().mean())
        print(
            f"{speaker:<10} {len(stats):>5} {float(t[:, 0].mean()):>7.3f} {tight:>10.0%} "
            f"{float(t[:, 2].median()):>10.1f}"
        )


def errors(recognizer, rows: list[dict], waves: list[torch.Tensor], label: str) -> None:
    from ds2hub.inference.transcribe import transcribe

    texts = transcribe(
        recognizer, [w.numpy() for w in waves], batch_size=32, sample_rate=SAMPLE_RATE
    )
    bins: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])
    confusions: collections.Counter = collections.Counter()
    for row, text in zip(rows, texts):
        wrong = text.strip() != row["transcription"]
        b = min(int(float(row["duration"]) * 10), 6)
        bins[b][0] += wrong
        bins[b][1] += 1
        if wrong:
            confusions[f"{row['transcription']}->{text.strip() or '(nothing)'}"] += 1
    total = sum(v[0] for v in bins.values())
    print(f"\n{label}: {total} of {len(rows)} words wrong")
    for b, (wrong, count) in sorted(bins.items()):
        print(f"  {b / 10:.1f}-{(b + 1) / 10:.1f} s: {wrong:>3} of {count}")
    print("  commonest:", ", ".join(f"{k} {v}" for k, v in confusions.most_common(8)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/fsdd_digits")
    parser.add_argument("--speaker", default="nicolas", help="the held-out speaker")
    parser.add_argument("--ckpt", help="a checkpoint to score on the held-out speaker")
    parser.add_argument(
        "--test-time", action="store_true", help="also slowed, padded and equalised audio"
    )
    args = parser.parse_args()
    root = Path(args.data)
    with open(root / "metadata.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    waves = [load_audio(root / row["file_name"], SAMPLE_RATE) for row in rows]
    describe(rows, waves)
    if not args.ckpt:
        return
    from ds2hub.inference.recognizer import SpeechRecognizer

    recognizer = SpeechRecognizer.from_checkpoint(args.ckpt)
    held = [(r, w) for r, w in zip(rows, waves) if r["speaker_id"] == args.speaker]
    rows, waves = [r for r, _ in held], [w for _, w in held]
    errors(recognizer, rows, waves, f"{args.speaker}, as recorded")
    if args.test_time:
        torch.manual_seed(0)

        def pad(w: torch.Tensor, seconds: float) -> torch.Tensor:
            n, quiet = int(seconds * SAMPLE_RATE), 1e-3 * w.abs().max()  # 60 dB down
            return torch.cat([torch.randn(n) * quiet, w, torch.randn(n) * quiet])

        errors(recognizer, rows, [change_tempo(w, 0.7) for w in waves], "slowed down (tempo 0.7)")
        for seconds in (0.08, 0.25):  # a pause before and after each word
            padded = [pad(w, seconds) for w in waves]
            errors(recognizer, rows, padded, f"padded with {seconds:g} s of quiet noise")
        for gain in (-8.0, 8.0):
            coloured = [equalize(w, [(2000.0, gain, 2.0)]) for w in waves]
            errors(recognizer, rows, coloured, f"equalised ({gain:+g} dB at 2 kHz)")


if __name__ == "__main__":
    main()
