"""Small ARPA files written by hand for decoding tests (probabilities given, not estimated)."""

from __future__ import annotations

from pathlib import Path


def write_arpa(
    path: Path,
    unigrams: dict[str, float],
    bigrams: dict[tuple[str, str], float] | None = None,
    backoff: float = 0.0,
) -> Path:
    """A bigram ARPA model: `unigrams` word -> log10 p (with `<s>`, `</s>`, `<unk>` added),
    `bigrams` (w1, w2) -> log10 p, every unigram backing off with `backoff`."""
    bigrams = dict(bigrams or {})
    bigrams.setdefault(("<s>", "</s>"), -99.0)  # KenLM wants order >= 2: one impossible bigram
    uni = {"<s>": -99.0, "</s>": -1.0, "<unk>": -6.0, **unigrams}
    lines = ["\\data\\", f"ngram 1={len(uni)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    for word, p in uni.items():
        lines.append(f"{p}\t{word}" + ("" if word == "</s>" else f"\t{backoff}"))
    lines += ["", "\\2-grams:"]
    lines += [f"{p}\t{a} {b}" for (a, b), p in bigrams.items()]
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
