#!/usr/bin/env python3
"""Synthesises the spoken-digit corpus that `recipes/digits.yaml` trains on.

Sequences of 1-5 English digit words ("four seven two nine") are spoken by Debian's `espeak-ng`
over its English accents and voice variants at random speeds, pitches and word gaps, and stored
as 16 kHz Ogg/Opus in the Hugging Face `audiofolder` layout:

    recipes/digits/{train,validation,test}/metadata.csv   (file_name,text,voice,duration)
    recipes/digits/{train,validation,test}/*.opus

Voice variants are split between train, validation and test, so validation and test speak with
voices training never heard. The output is committed, so users need no TTS; re-running this script
(needs `espeak-ng` and `ffmpeg`) rebuilds it:

    python recipes/digits/make_digits.py [--out recipes/digits]
"""

from __future__ import annotations

import argparse
import csv
import random
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile as sf

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ACCENTS = [
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
]
SIZES = {"train": 1600, "validation": 200, "test": 200}


def voice_variants() -> list[str]:
    """espeak-ng's voice variants (file names such as `m3`, `f2`, `klatt`, `Alicia`)."""
    out = subprocess.run(
        ["espeak-ng", "--voices=variant"], check=True, capture_output=True, text=True
    ).stdout
    variants = [line.split()[4].split("/")[-1] for line in out.splitlines()[1:] if line.strip()]
    # Whispering and effects voices carry almost no voicing; they make the task a different one.
    return sorted(
        v for v in set(variants) if v.lower() not in {"whisper", "whisperf", "demonic", "croak"}
    )


def split_variants(variants: list[str], rng: random.Random) -> dict[str, list[str]]:
    shuffled = variants[:]
    rng.shuffle(shuffled)
    n_val = n_test = max(2, len(shuffled) // 7)
    return {
        "validation": shuffled[:n_val],
        "test": shuffled[n_val : n_val + n_test],
        "train": shuffled[n_val + n_test :],
    }


def synthesize(text: str, voice: str, speed: int, pitch: int, gap: int, target: Path) -> float:
    """Speaks `text` into an Ogg/Opus file; returns its duration in seconds."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
        subprocess.run(
            [
                "espeak-ng",
                "-v",
                voice,
                "-s",
                str(speed),
                "-p",
                str(pitch),
                "-g",
                str(gap),
                "-w",
                wav.name,
                text,
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-i",
                wav.name,
                "-ac",
                "1",
                "-ar",
                "16000",
                "-c:a",
                "libopus",
                "-b:a",
                "14k",
                "-application",
                "voip",
                str(target),
            ],
            check=True,
        )
    return sf.info(str(target)).duration


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=2016)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    variants = split_variants(voice_variants(), rng)
    for split, size in SIZES.items():
        folder = args.out / split
        folder.mkdir(parents=True, exist_ok=True)
        jobs = []
        for i in range(size):
            words = [rng.choice(DIGITS) for _ in range(rng.randint(1, 5))]
            voice = f"{rng.choice(ACCENTS)}+{rng.choice(variants[split])}"
            jobs.append(
                (
                    f"{split}_{i:04d}.opus",
                    " ".join(words),
                    voice,
                    rng.randint(120, 220),
                    rng.randint(15, 85),
                    rng.randint(0, 6),
                )
            )
        with ThreadPoolExecutor(max_workers=4) as pool:
            durations = list(pool.map(lambda j, out=folder: synthesize(*j[1:], out / j[0]), jobs))
        with open(folder / "metadata.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "text", "voice", "duration"])
            for job, seconds in zip(jobs, durations):
                writer.writerow([job[0], job[1], job[2], f"{seconds:.3f}"])
        print(
            f"{split}: {size} utterances, {sum(durations) / 60:.1f} min, voices {variants[split]}"
        )


if __name__ == "__main__":
    main()
