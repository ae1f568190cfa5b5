"""English sentences spoken by espeak-ng, for measuring what a word LM adds (issue 9).

    python experiments/lm_decoding/english_espeak.py --text ../shared/data/text/ljspeech_sentences.txt \
        --out runs/english_espeak/data [--train 2500]

The 200 held-out sentences of `heldout_split` (seed 0, the split every English LM experiment
uses) become the test set; training and validation speak other sentences, and the LM is built
from the non-held-out sentences only (`--lm-text` writes them). Voices: espeak-ng's English
accents with its voice variants, split so that validation and test speak with variants training
never hears (as recipes/digits/make_digits.py does). Stored as 16 kHz Ogg/Opus audiofolders.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ds2hub.lm.ngram import heldout_split
from ds2hub.tokenizers.normalizers import normalize_english

REPO = Path(__file__).resolve().parents[2]


def _digits_script():
    spec = importlib.util.spec_from_file_location(
        "make_digits", REPO / "recipes/digits/make_digits.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--text", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=2500, help="training sentences")
    parser.add_argument("--validation", type=int, default=150)
    parser.add_argument("--max-words", type=int, default=14, help="training sentence length cap")
    parser.add_argument("--seed", type=int, default=2016)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    md = _digits_script()
    rng = random.Random(args.seed)
    lines = [normalize_english(x) for x in args.text.read_text(encoding="utf-8").splitlines()]
    train_side, test = heldout_split(lines, n=200, seed=0)
    lm_text = args.out / "lm_text.txt"  # every non-held-out sentence: the LM's text
    args.out.mkdir(parents=True, exist_ok=True)
    lm_text.write_text("\n".join(train_side) + "\n", encoding="utf-8")
    pool = [s for s in train_side if len(s.split()) <= args.max_words]
    rng.shuffle(pool)
    splits = {
        "train": pool[: args.train],
        "validation": pool[args.train : args.train + args.validation],
        "test": test,
    }
    variants = md.split_variants(md.voice_variants(), rng)
    for split, sentences in splits.items():
        folder = args.out / split
        folder.mkdir(parents=True, exist_ok=True)
        jobs = []
        for i, text in enumerate(sentences):
            voice = f"{rng.choice(md.ACCENTS)}+{rng.choice(variants[split])}"
            speed, pitch = rng.randint(140, 190), rng.randint(30, 70)
            jobs.append((f"{split}_{i:04d}.opus", text, voice, speed, pitch))

        def run(job, folder=folder):
            name, text, voice, speed, pitch = job
            return md.synthesize(text, voice, speed, pitch, 1, folder / name)

        with ThreadPoolExecutor(args.threads) as ex:
            durations = list(ex.map(run, jobs))
        with open(folder / "metadata.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "text", "voice", "duration"])
            for (name, text, voice, _, _), d in zip(jobs, durations):
                writer.writerow([name, text, voice, f"{d:.3f}"])
        print(f"{split}: {len(jobs)} utterances, {sum(durations) / 60:.1f} min")
    print(f"LM text: {len(train_side)} sentences in {lm_text}")


if __name__ == "__main__":
    main()
