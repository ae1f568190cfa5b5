"""English bigram outputs (Deep Speech 2, section 3.4).

Each word is split into non-overlapping character pairs from its start, a final odd character stays
a unigram, and word boundaries are a separate space token written `_`:
`the cats sat` -> `th e _ ca ts _ sa t`. Bigrams halve the number of output tokens per second, so
the model can use a time stride of 4 instead of 2 without making CTC infeasible.
"""

from __future__ import annotations

import string

from ds2hub.tokenizers.base import BLANK, Tokenizer
from ds2hub.tokenizers.normalizers import normalize_english, uncovered_letters

WORD_BOUNDARY = "_"
_LETTERS = [*string.ascii_lowercase, "'"]


def split_bigrams(text: str) -> list[str]:
    """Splits normalized English text the paper's way.

    >>> split_bigrams("the cats sat")
    ['th', 'e', '_', 'ca', 'ts', '_', 'sa', 't']
    """
    tokens: list[str] = []
    for w, word in enumerate(text.split()):
        if w:
            tokens.append(WORD_BOUNDARY)
        tokens.extend(word[i : i + 2] for i in range(0, len(word), 2))
    return tokens


class BigramTokenizer(Tokenizer):
    """Blank, `_`, the 27 unigrams (`a`-`z`, `'`) and all 729 bigrams over them: 758 classes."""

    kind = "bigrams"
    lm_unit = "word"
    word_boundary = WORD_BOUNDARY
    language = "en"

    def __init__(self) -> None:
        bigrams = [a + b for a in _LETTERS for b in _LETTERS]
        self.vocab = [BLANK, WORD_BOUNDARY, *_LETTERS, *bigrams]

    def normalize(self, text: str) -> str:
        return normalize_english(text)

    def uncovered(self, text: str) -> set[str]:
        return uncovered_letters(text, set(_LETTERS))

    def _split(self, text: str) -> list[str]:
        return split_bigrams(text)

    def _join(self, tokens: list[str]) -> str:
        return "".join(" " if t == WORD_BOUNDARY else t for t in tokens).strip()
