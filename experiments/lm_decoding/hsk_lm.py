"""A word LM for the HSK words benchmark that has never seen the held-out words (issue 9).

    python experiments/lm_decoding/hsk_lm.py --data ../shared/data/hsk_words --out runs/hsk_lm/lm.arpa

The validation and test words are drawn exactly as `recipes/hsk_words.yaml` draws them
(`holdout_groups` over the `transcription` column, fractions 0.1/0.1, seed 0). The LM is a unigram
over jieba's word frequencies (words rarer than 5 dropped, as the pinyin tokenizer does) without
any word containing a held-out word (`lines_without`: single characters stay, the LM must know
them). A held-out word can then only be written as its characters. There is no Mandarin running
text in ../shared/data, so the LM is a word unigram: the gain measured is the lexicon search's.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from ds2hub.decoding.hanzi import word_counts
from ds2hub.decoding.lexicon import unigram_priors, write_unigram_arpa
from ds2hub.lm.ngram import lines_without
from ds2hub.training.data.datamodule import holdout_groups


def heldout_words(data: Path, fraction: float = 0.1, seed: int = 0) -> set[str]:
    with open(data / "metadata.csv", encoding="utf-8") as f:
        values = [row["transcription"] for row in csv.DictReader(f)]
    val = holdout_groups(values, fraction, seed)
    rest = [v for v in values if v not in val]
    n = max(1, round(fraction * len(set(values))))
    test = holdout_groups(rest, n / max(1, len(set(rest))), seed + 1)
    return val | test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--min-count", type=int, default=5)
    args = parser.parse_args()
    held = heldout_words(args.data)
    counts = word_counts(None, args.min_count)
    kept = set(lines_without(counts, held))
    counts = {w: c for w, c in counts.items() if w in kept}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_unigram_arpa(unigram_priors(counts), args.out)
    print(f"{len(held)} held-out words; LM: {len(counts)} words without them -> {args.out}")


if __name__ == "__main__":
    main()
