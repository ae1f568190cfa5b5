"""How long `ds2hub lm build`'s estimator takes, and how well its LMs predict held-out text.

English: word n-grams from `text/ljspeech_sentences.txt` without its 200 held-out sentences
(`heldout_split(lines, n=200, seed=0)`, the split the English speech experiment tests on),
normalised as the English tokenizers normalise (`normalize_english`); perplexity on those 200.

Mandarin: character n-grams for the HSK words recipe. Held out are the words `recipes/hsk_words.yaml`
holds out (validation 10 % + test 10 % of the distinct words, seed 0, as `SpeechDataModule` draws
them: `hsk_heldout_words`); the LM text never contains them (`lines_without`):
  - `hsk-train`: the other HSK words, one a line;
  - `jieba-dict`: the words of jieba's dictionary (349k, the one the pinyin lexicon uses), minus
    every entry that contains a held-out word of 2+ characters or is a held-out word; each entry
    once, or (`x freq`) counted by its jieba frequency (`ds2hub lm build --word-list dict.txt`).
Perplexity per character on the held-out words, each word a sentence.

    uv run --frozen python experiments/lm_build/lm_build.py --data ../shared/data

Timings are wall-clock seconds of one run on a shared machine (build = counting + estimation;
`write` = the ARPA file; `read` = `read_arpa` with all its checks).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from ds2hub.lm.ngram import TextUnits, build_ngram, heldout_split, lines_without, read_arpa
from ds2hub.tokenizers.normalizers import normalize_english, normalize_mandarin


def hsk_heldout_words(
    metadata: Path, fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> tuple[set[str], set[str]]:
    """The (validation, test) words `SpeechDataModule` holds out of the HSK corpus with
    `holdout_column: transcription` and the recipe's fractions and seed (same draws)."""
    from ds2hub.training.data.datamodule import holdout_groups

    with open(metadata, encoding="utf-8") as f:
        values = [row["transcription"] for row in csv.DictReader(f)]
    val = holdout_groups(values, fraction, seed)
    rest = [v for v in values if v not in val]
    n = max(1, round(test_fraction * len(set(values))))
    test = holdout_groups(rest, n / max(1, len(set(rest))), seed + 1)
    return val, test


def measure(
    name: str,
    lines: list[str],
    heldout: list[str],
    order: int,
    units: TextUnits,
    repeats: list[int] | None = None,
) -> None:
    start = time.perf_counter()
    model = build_ngram(lines, order, units, repeats=repeats)
    built = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lm.arpa"
        start = time.perf_counter()
        model.write_arpa(path)
        written = time.perf_counter() - start
        size = path.stat().st_size / 2**20
        start = time.perf_counter()
        read_arpa(path)
        read = time.perf_counter() - start
    ppl = model.perplexity(t for t in map(units.split, heldout) if t)
    counts = "/".join(f"{c:,}" for c in model.counts)
    print(
        f"| {name} | {order} | {len(lines):,} | {counts} | {built:.1f} | {written:.1f} | "
        f"{read:.1f} | {size:.1f} | {ppl.tokens:,} | {100 * ppl.oov / ppl.tokens:.1f} | "
        f"{ppl.perplexity:.1f} | {ppl.perplexity_known:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="the shared data folder")
    parser.add_argument("--orders", default="2,3,4", help="English word orders")
    args = parser.parse_args()
    data = Path(args.data)
    print(
        "| LM | order | lines | n-grams per order | build s | write s | read s | MB | "
        "held-out tokens | OOV % | perplexity | excl. OOV |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    sentences = (data / "text" / "ljspeech_sentences.txt").read_text(encoding="utf-8")
    train, heldout = heldout_split(sentences.splitlines(), n=200, seed=0)
    english = TextUnits("word", normalize=normalize_english)
    for order in map(int, args.orders.split(",")):
        measure("ljspeech words", train, heldout, order, english)

    val, test = hsk_heldout_words(data / "hsk_words" / "metadata.csv")
    held_words = sorted(val | test)
    with open(data / "hsk_words" / "metadata.csv", encoding="utf-8") as f:
        hsk = sorted({row["transcription"] for row in csv.DictReader(f)})
    hsk_train = lines_without(hsk, held_words)
    import jieba

    dictionary = Path(jieba.__file__).parent / "dict.txt"
    counts = dict(
        (line.split()[0], int(line.split()[1]))
        for line in dictionary.read_text(encoding="utf-8").splitlines()
    )
    entries = list(counts)
    jieba_text = lines_without(entries, held_words)
    jieba_counts = [counts[w] for w in jieba_text]
    print(
        f"\nHSK: {len(held_words)} held-out words ({len(val)} validation, {len(test)} test); "
        f"LM text: {len(hsk_train):,} of {len(hsk):,} HSK words, {len(jieba_text):,} of "
        f"{len(entries):,} jieba entries"
    )
    chars = TextUnits("char", normalize=normalize_mandarin)
    for order in (2, 3):
        measure("hsk-train chars", hsk_train, held_words, order, chars)
        measure("jieba-dict chars", jieba_text, held_words, order, chars)
        measure("jieba-dict chars x freq", jieba_text, held_words, order, chars, jieba_counts)


if __name__ == "__main__":
    main()
