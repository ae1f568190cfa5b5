"""German for ds2hub: a character tokenizer, a text normaliser, a synthetic corpus and recipes.

Installed next to ds2hub (`pip install plugins/ds2hub-german`), it registers through entry points:

- `ds2hub.recipes`: this package; its recipes are `ds2hub_german/recipes/*.yaml`
  (`german_digits`, `german_digits_finetune`).
- `ds2hub.tokenizers`: `german` -> `GermanTokenizer`.
- `ds2hub.normalizers`: `german` -> `normalize_german`.

The corpus is made on the user's machine by `python -m ds2hub_german.make_corpus`.
"""

from ds2hub_german.normalize import normalize_german, spell_numbers
from ds2hub_german.tokenizer import GERMAN_ALPHABET, GermanTokenizer

__all__ = ["GERMAN_ALPHABET", "GermanTokenizer", "normalize_german", "spell_numbers"]
