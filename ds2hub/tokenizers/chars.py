"""English characters: the paper's default output alphabet (a-z, apostrophe, space)."""

from __future__ import annotations

import string

from ds2hub.plugins import get_normalizer
from ds2hub.tokenizers.base import BLANK, Tokenizer
from ds2hub.tokenizers.normalizers import normalize_english, uncovered_letters

SPACE = " "
ENGLISH_ALPHABET = [SPACE, "'", *string.ascii_lowercase]


class CharTokenizer(Tokenizer):
    """One token per character: blank, space, apostrophe, `a`-`z` (29 classes by default).

    Args:
        alphabet: the characters, in id order after the blank (default: English).
        normalizer: a registered text normaliser (`ds2hub.normalizers`) applied before characters
            outside the alphabet are dropped; None: English rules for English, else lowercasing.
        language: ISO 639-1 code of the transcripts; None: `en` for the English alphabet, else
            the class's `language`.

    Decoding: a word LM, words separated by the space token (a subclass inherits both).
    """

    kind = "chars"
    lm_unit = "word"
    word_boundary = SPACE

    def __init__(
        self,
        alphabet: list[str] | None = None,
        normalizer: str | None = None,
        language: str | None = None,
    ) -> None:
        self.normalizer = normalizer
        # Looked up now: a recipe naming a normaliser that is not installed fails at start-up.
        self._normalize = get_normalizer(normalizer) if normalizer is not None else None
        self.alphabet = list(alphabet) if alphabet is not None else list(ENGLISH_ALPHABET)
        if len(set(self.alphabet)) != len(self.alphabet) or any(len(c) != 1 for c in self.alphabet):
            raise ValueError("alphabet must list distinct single characters")
        self.vocab = [BLANK, *self.alphabet]
        self._allowed = set(self.alphabet)
        self._language = language
        if language is not None:
            self.language = language
        elif self.alphabet == ENGLISH_ALPHABET:
            self.language = "en"

    def normalize(self, text: str) -> str:
        if self._normalize is not None:  # the language's own rules, case included
            text = " ".join(self._normalize(text).split())
        elif self.alphabet == ENGLISH_ALPHABET:
            return normalize_english(text)
        else:
            text = " ".join(text.lower().split())
        return "".join(ch for ch in text if ch in self._allowed)

    def uncovered(self, text: str) -> set[str]:
        return uncovered_letters(text, set(self.alphabet))

    def _split(self, text: str) -> list[str]:
        return list(text)

    def _join(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def get_config(self) -> dict:
        config: dict = {} if self.alphabet == ENGLISH_ALPHABET else {"alphabet": self.alphabet}
        if self.normalizer is not None:
            config["normalizer"] = self.normalizer
        if self._language is not None:
            config["language"] = self._language
        return config
