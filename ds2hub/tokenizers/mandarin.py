"""Mandarin characters: the paper's Mandarin model emits Han characters directly (about 6,000)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ds2hub.tokenizers.base import BLANK, Tokenizer
from ds2hub.tokenizers.normalizers import normalize_mandarin

UNK = "<unk>"
UNK_TEXT = "⁇"  # how an unknown character reads in decoded text (as SentencePiece shows it)


class MandarinTokenizer(Tokenizer):
    """One token per character, vocabulary learned from training transcripts.

    Characters seen fewer than `min_count` times in training, and any character met later that
    training never saw, map to the explicit `<unk>` token (id 1), which decodes to `⁇`.

    Args:
        characters: the learned vocabulary (None until `fit` runs; stored in the tokenizer file).
        min_count: minimum training frequency for a character to get its own token.
    """

    kind = "mandarin"
    word_joiner = ""
    lm_unit = "char"  # every character a unit of a character LM; no token marks words
    language = "zh"
    unk_id = 1

    def __init__(self, characters: list[str] | None = None, min_count: int = 1) -> None:
        self.min_count = min_count
        self.characters = list(characters) if characters is not None else None
        self.vocab = [BLANK, UNK, *(self.characters or [])]

    @property
    def needs_fit(self) -> bool:
        return self.characters is None

    def fit(self, texts: Iterable[str]) -> MandarinTokenizer:
        counts = Counter(ch for text in texts for ch in self.normalize(text))
        # Sorted by frequency, then code point: the same transcripts always give the same ids.
        frequent = (c for c, n in counts.items() if n >= self.min_count)
        chars = sorted(frequent, key=lambda c: (-counts[c], c))
        if not chars:
            raise ValueError("MandarinTokenizer.fit: the transcripts contain no characters")
        self.characters = chars
        self.vocab = [BLANK, UNK, *chars]
        return self

    def normalize(self, text: str) -> str:
        return normalize_mandarin(text)

    def _split(self, text: str) -> list[str]:
        if self.needs_fit:
            raise RuntimeError("MandarinTokenizer has no vocabulary yet: call fit(transcripts)")
        return list(text)

    def uncovered(self, text: str) -> set[str]:
        if self.needs_fit:
            return set()
        known = set(self.characters or [])
        return {ch for ch in self.normalize(text) if ch not in known}

    def _unknown_id(self, token: str) -> int:
        return self.unk_id

    def _join(self, tokens: list[str]) -> str:
        return "".join(UNK_TEXT if t == UNK else t for t in tokens)

    def get_config(self) -> dict:
        return {"characters": self.characters, "min_count": self.min_count}
