"""Word lists for lexicon decoding: which words the search may write, and how each is spelled."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LexiconEntry:
    """A word a lexicon search may output: its text (what the LM scores), its spelling in the
    model's tokens, and its log10 prior (as ARPA files write probabilities)."""

    text: str
    spelling: tuple[str, ...]
    log10_prob: float = 0.0


def read_word_counts(path: str | Path) -> dict[str, float]:
    """A word list: `word [count [tag]]` lines (jieba's dictionary format, or bare words counting
    1). Repeated words add up; non-positive counts are dropped."""
    counts: dict[str, float] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not fields:
            continue
        try:
            count = float(fields[1]) if len(fields) > 1 else 1.0
        except ValueError:
            count = 1.0
        counts[fields[0]] = counts.get(fields[0], 0.0) + count
    return {word: count for word, count in counts.items() if count > 0}


def unigram_priors(counts: dict[str, float]) -> dict[str, float]:
    """log10 relative frequencies of a word list."""
    total = sum(counts.values())
    return {w: math.log10(c / total) for w, c in counts.items()}


def write_lexicon(entries: Iterable[LexiconEntry], path: Path) -> None:
    """Flashlight's lexicon file: `word<TAB>t o k e n s` lines; a word may have several lines
    (one per spelling), and several words may share a spelling (homophones)."""
    path.write_text(
        "".join(f"{e.text}\t{' '.join(e.spelling)}\n" for e in entries), encoding="utf-8"
    )


def write_unigram_arpa(priors: dict[str, float], path: Path) -> None:
    """A unigram LM over `priors` (word -> log10 probability) as an ARPA file KenLM reads.

    The decoder's default when a model carries no LM file. KenLM only loads models of order two
    or more, so the file declares one bigram (`<s> </s>`, the empty sentence, made impossible);
    every other bigram backs off to the unigrams.
    """
    lines = ["\\data\\", f"ngram 1={len(priors) + 3}", "ngram 2=1", "", "\\1-grams:"]
    lines += ["-99\t<s>\t0", "0\t</s>", "-99\t<unk>\t0"]  # every hypothesis pays the same end
    lines += [f"{p:.6f}\t{word}\t0" for word, p in priors.items()]
    lines += ["", "\\2-grams:", "-99\t<s> </s>", "", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
