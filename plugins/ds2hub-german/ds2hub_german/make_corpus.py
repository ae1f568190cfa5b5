"""Synthesises the German digits-and-phrases corpus the `german_digits` recipes train on.

Sequences of one to five German digit words ("vier sieben null zwei") and short everyday phrases
("guten morgen", "wo ist die straße") are spoken by `espeak-ng`'s German voice over its voice
variants at random speeds, pitches and word gaps, and stored as 16 kHz Ogg/Opus in the Hugging
Face `audiofolder` layout that `ds2hub` reads:

    <out>/{train,validation,test}/metadata.jsonl (file_name, text, voice, duration)
    <out>/{train,validation,test}/*.opus

Voice variants are split between the three parts, so validation and test speak with voices training
never heard. Transcripts are written out in words (no digits), lowercase, with umlauts and ß.
Needs `espeak-ng` and `ffmpeg` on the PATH:

    python -m ds2hub_german.make_corpus --out german-digits
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile as sf

DIGITS = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"]
PHRASES = [
    "guten morgen",
    "guten tag",
    "guten abend",
    "gute nacht",
    "danke schön",
    "bitte sehr",
    "ja",
    "nein",
    "hallo",
    "tschüss",
    "auf wiedersehen",
    "bis morgen",
    "wie geht es dir",
    "mir geht es gut",
    "wie spät ist es",
    "wo ist die straße",
    "entschuldigung",
    "ich verstehe das nicht",
    "sprechen sie langsamer",
    "das ist schön",
    "die tür ist offen",
    "ich möchte einen kaffee",
    "übermorgen fahren wir",
    "zwölf grüne äpfel",
]
PHRASE_SHARE = 0.3  # the rest are digit sequences
SIZES = {"train": 800, "validation": 100, "test": 100}
VOICE = "de"
# Whispering and effects variants carry almost no voicing; they make the task a different one.
EXCLUDED_VARIANTS = {"whisper", "whisperf", "demonic", "croak"}


def voice_variants() -> list[str]:
    """espeak-ng's voice variants (file names such as `m3`, `f2`, `klatt`, `Alicia`)."""
    out = subprocess.run(
        ["espeak-ng", "--voices=variant"], check=True, capture_output=True, text=True
    ).stdout
    variants = {line.split()[4].split("/")[-1] for line in out.splitlines()[1:] if line.strip()}
    return sorted(v for v in variants if v.lower() not in EXCLUDED_VARIANTS)


def split_variants(variants: list[str], rng: random.Random) -> dict[str, list[str]]:
    """Disjoint voice variants for train, validation and test."""
    shuffled = variants[:]
    rng.shuffle(shuffled)
    n_held = max(2, len(shuffled) // 7)
    return {
        "validation": shuffled[:n_held],
        "test": shuffled[n_held : 2 * n_held],
        "train": shuffled[2 * n_held :],
    }


def transcript(rng: random.Random) -> str:
    """A digit sequence or a phrase, as it is spoken and written in the metadata."""
    if rng.random() < PHRASE_SHARE:
        return rng.choice(PHRASES)
    return " ".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 5)))


def synthesize(text: str, voice: str, speed: int, pitch: int, gap: int, target: Path) -> float:
    """Speaks `text` into a 16 kHz Ogg/Opus file; returns its duration in seconds."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-g", str(gap)]
            + ["-w", wav.name, text],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-i", wav.name, "-ac", "1", "-ar", "16000"]
            + ["-c:a", "libopus", "-b:a", "14k", "-application", "voip", str(target)],
            check=True,
        )
    return sf.info(str(target)).duration


def write_metadata(folder: Path, rows: list[dict]) -> Path:
    """Writes `metadata.jsonl` (`file_name`, `text`, `voice`, `duration` per line).

    JSON lines, not CSV: `datasets` reads an audiofolder's CSV with pandas, which turns the
    transcript `null` (German zero) into a missing value, and the utterance would be dropped.
    """
    path = folder / "metadata.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def make_corpus(out: Path, sizes: dict[str, int], seed: int = 2016, workers: int = 2) -> None:
    """Writes the corpus into `out` (which must not exist yet or be empty)."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new folder")
    rng = random.Random(seed)
    variants = split_variants(voice_variants(), rng)
    for split, size in sizes.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        jobs = [
            (
                f"{split}_{i:04d}.opus",
                transcript(rng),
                f"{VOICE}+{rng.choice(variants[split])}",
                rng.randint(120, 200),  # words per minute
                rng.randint(20, 80),  # pitch
                rng.randint(0, 5),  # extra gap between words, 10 ms units
            )
            for i in range(size)
        ]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            durations = list(pool.map(lambda j, out=folder: synthesize(*j[1:], out / j[0]), jobs))
        write_metadata(
            folder,
            [
                {"file_name": job[0], "text": job[1], "voice": job[2], "duration": round(sec, 3)}
                for job, sec in zip(jobs, durations)
            ],
        )
        print(
            f"{split}: {size} utterances, {sum(durations) / 60:.1f} min, voices {variants[split]}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ds2hub_german.make_corpus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("german-digits"))
    parser.add_argument("--seed", type=int, default=2016)
    parser.add_argument("--workers", type=int, default=2, help="parallel espeak-ng/ffmpeg jobs")
    for split, size in SIZES.items():
        parser.add_argument(f"--{split}", type=int, default=size, help=f"utterances ({size})")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("espeak-ng", "ffmpeg") if shutil.which(tool) is None]
    if missing:
        print(f"make_corpus: error: {' and '.join(missing)} not found on the PATH", file=sys.stderr)
        return 2
    sizes = {split: getattr(args, split) for split in SIZES}
    try:
        make_corpus(args.out, sizes, args.seed, args.workers)
    except FileExistsError as error:
        print(f"make_corpus: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
