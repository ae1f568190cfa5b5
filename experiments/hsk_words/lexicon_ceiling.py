"""How well can the pinyin lexicon alone recover Mandarin characters? (the decoder's ceiling)

Every transcript is turned into its true toned pinyin and decoded back with `HanziLexicon` (jieba's
word frequencies): what remains wrong are homophones the unigram LM resolves the other way, which
no acoustic model can fix.

    uv run python experiments/hsk_words/lexicon_ceiling.py --path ../shared/data/hsk_words
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from torchmetrics.text import CharErrorRate, WordErrorRate

from ds2hub.decoding.hanzi import hanzi_lexicon
from ds2hub.tokenizers import PinyinTokenizer
from ds2hub.tokenizers.pinyin import to_pinyin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="audiofolder with metadata.csv")
    parser.add_argument("--text-column", default="transcription")
    args = parser.parse_args()
    with open(Path(args.path) / "metadata.csv", encoding="utf-8") as f:
        tokenizer = PinyinTokenizer()
        refs = [tokenizer.normalize(row[args.text_column]) for row in csv.DictReader(f)]
    lexicon = hanzi_lexicon(tokenizer.lexicon_path, tokenizer.lexicon_min_count)
    hyps = [lexicon.to_hanzi(to_pinyin(ref)) for ref in refs]
    single = [(h, r) for h, r in zip(hyps, refs) if len(r) == 1]
    multi = [(h, r) for h, r in zip(hyps, refs) if len(r) > 1]
    print(f"{len(refs)} transcripts decoded from their true pinyin")
    print(f"CER {100 * float(CharErrorRate()(hyps, refs)):.1f} %")
    print(f"WER {100 * float(WordErrorRate()(hyps, refs)):.1f} % (a word = one transcript)")
    for name, pairs in (("single characters", single), ("words of 2+ characters", multi)):
        right = sum(h == r for h, r in pairs)
        print(f"{name}: {len(pairs)}, exactly right {100 * right / max(len(pairs), 1):.1f} %")


if __name__ == "__main__":
    main()
