#!/usr/bin/env python3
"""Synthesises isolated spoken digits with recorded-voice synthesisers, as extra speakers.

`recipes/digits` speaks digit sequences with `espeak-ng`, a formant synthesiser: its voices are
many but none is a human voice. This corpus adds voices built from recordings of five people
(Debian's `flite` voices kal16, awb, rms and slt, and Festival's ked, kal and slt voices), each
word spoken on its own like the Free Spoken Digit Dataset, with the pitch moved by -4 to +4
semitones (sox's `pitch`: F0 and formants move together, as between speakers) and the tempo by
0.75-1.35 (the duration alone), so a voice yields a range of speakers; the silence around the
word is trimmed and 0-80 ms put back.
Stored as 16 kHz Ogg/Opus in the Hugging Face `audiofolder` layout:

    recipes/tts_digits/train/metadata.csv   (file_name,text,voice,duration)
    recipes/tts_digits/train/*.opus

The output is committed, so users need no TTS; re-running this script (needs Debian's `flite`,
`festival`, `festvox-kallpc16k`, `festvox-kdlpc16k`, `festvox-us-slt-hts`, `sox` and `ffmpeg`)
rebuilds it:

    python recipes/tts_digits/make_tts_digits.py [--out recipes/tts_digits]
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
# (synthesiser, voice): flite's built-in voices and Festival's English voices.
VOICES = [
    ("flite", "kal16"),
    ("flite", "awb"),
    ("flite", "rms"),
    ("flite", "slt"),
    ("festival", "ked_diphone"),
    ("festival", "kal_diphone"),
    ("festival", "cmu_us_slt_arctic_hts"),
]


def speak(engine: str, voice: str, text: str, wav: Path) -> None:
    """Writes `text` spoken by `voice` to `wav`."""
    if engine == "flite":
        cmd = ["flite", "-voice", voice, "-t", text, "-o", str(wav)]
        subprocess.run(cmd, check=True, capture_output=True)
    else:
        subprocess.run(
            ["text2wave", "-eval", f"(voice_{voice})", "-o", str(wav)],
            input=text,
            text=True,
            check=True,
            capture_output=True,
        )


def synthesize(
    text: str, engine: str, voice: str, cents: int, tempo: float, pads: tuple, target: Path
) -> float:
    """Speaks `text`, shifts and trims it, stores Ogg/Opus; returns its duration in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, shaped = Path(tmp) / "raw.wav", Path(tmp) / "shaped.wav"
        speak(engine, voice, text, raw)
        # Peak-normalised first, so the trim threshold is relative to the word: 50 dB below its
        # peak keeps weak onsets and codas (the /f/ of "five", the /θ/ of "three"), which a fixed
        # threshold cut off the quieter voices. silence ... reverse silence ... reverse: both ends.
        trim = ["silence", "1", "0.005", "-50d", "reverse", "silence", "1", "0.005", "-50d"]
        subprocess.run(
            ["sox", str(raw), "-r", "16000", "-c", "1", str(shaped), "pitch", str(cents)]
            + ["tempo", "-s", f"{tempo:.3f}", "norm", "-1"]
            + trim
            + ["reverse"]
            + ["pad", f"{pads[0]:.3f}", f"{pads[1]:.3f}"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-i", str(shaped), "-ac", "1", "-ar", "16000"]
            + ["-c:a", "libopus", "-b:a", "14k", "-application", "voip", str(target)],
            check=True,
        )
    return sf.info(str(target)).duration


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--size", type=int, default=1400)
    parser.add_argument("--seed", type=int, default=2016)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    folder = args.out / "train"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for i in range(args.size):
        engine, voice = VOICES[i % len(VOICES)]
        jobs.append(
            (
                f"train_{i:04d}.opus",
                DIGITS[(i // len(VOICES)) % len(DIGITS)],  # every voice says every digit evenly
                engine,
                voice,
                rng.randint(-400, 400),
                rng.uniform(0.75, 1.35),
                (rng.uniform(0, 0.08), rng.uniform(0, 0.08)),
            )
        )
    with ThreadPoolExecutor(max_workers=2) as pool:
        durations = list(pool.map(lambda j: synthesize(*j[1:], folder / j[0]), jobs))
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text", "voice", "duration"])
        for job, seconds in zip(jobs, durations):
            writer.writerow([job[0], job[1], f"{job[2]}:{job[3]}", f"{seconds:.3f}"])
    print(f"train: {len(jobs)} utterances, {sum(durations) / 60:.1f} min, {len(VOICES)} voices")


if __name__ == "__main__":
    main()
