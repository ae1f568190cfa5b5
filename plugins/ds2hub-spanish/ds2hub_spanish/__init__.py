"""Spanish characters for ds2hub: a-z, ñ, accented vowels, ü, apostrophe and space."""

from __future__ import annotations

import re
import unicodedata

from ds2hub.tokenizers import CharTokenizer

SPANISH_ALPHABET = [" ", "'", *"abcdefghijklmnopqrstuvwxyz", *"áéíóúüñ"]
_DROP = re.compile(r"[^a-z'áéíóúüñ ]+")


class SpanishTokenizer(CharTokenizer):
    """Spanish characters; punctuation (¿¡, …) is dropped, numbers must be spelled out beforehand."""

    kind = "spanish"
    language = "es"  # model cards; LM decoding (words, the space between them) is CharTokenizer's

    def __init__(self) -> None:
        super().__init__(alphabet=SPANISH_ALPHABET)

    def normalize(self, text: str) -> str:
        text = unicodedata.normalize("NFC", text).lower()
        return " ".join(_DROP.sub(" ", text).split())

    def get_config(self) -> dict:
        return {}
