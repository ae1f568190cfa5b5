"""German characters as CTC outputs: blank, space, apostrophe, a-z, ä ö ü ß (33 classes)."""

from __future__ import annotations

from ds2hub.tokenizers import CharTokenizer
from ds2hub.tokenizers.normalizers import normalize_reference
from ds2hub_german.normalize import normalize_german, spell_numbers

GERMAN_ALPHABET = [" ", "'", *"abcdefghijklmnopqrstuvwxyz", *"äöüß"]


class GermanTokenizer(CharTokenizer):
    """One token per German character; transcripts go through `normalize_german` (numbers are
    spelled out, umlauts and ß kept).

    The first 29 tokens are ds2hub's English characters in the same order, so fine-tuning from an
    English character model keeps their output rows (`model.finetune.copy_shared_tokens`).

    Everything decoders need (a word LM, the space between words, the labels of each backend) is
    `CharTokenizer`'s; `language` names German on model cards.
    """

    kind = "german"
    language = "de"

    def __init__(self) -> None:
        super().__init__(alphabet=GERMAN_ALPHABET)

    def normalize(self, text: str) -> str:
        return normalize_german(text)

    def reference(self, text: str) -> str:
        # Scored text keeps every word (ds2hub's rule); numbers are spelled first, so a reference
        # "3" and a hypothesis "drei" agree.
        return normalize_reference(spell_numbers(text), self.word_delimited)

    def get_config(self) -> dict:
        return {}
