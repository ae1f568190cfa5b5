"""German text normalisation: what a German character model is trained to write."""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

_NUMBER = re.compile(r"\d+")
_DROP = re.compile(r"[^a-zäöüß' ]+")


def spell_numbers(text: str) -> str:
    """Writes every run of digits out in German words (`num2words`): `12 Äpfel` -> `zwölf Äpfel`.

    >>> spell_numbers("Gleis 3, Wagen 12")
    'Gleis drei, Wagen zwölf'
    """
    return _NUMBER.sub(lambda m: num2words(int(m.group()), lang="de"), text)


def normalize_german(text: str) -> str:
    """Lowercases, spells numbers out, keeps `a`-`z`, `ä ö ü ß` and apostrophes, and turns
    everything else (punctuation, dashes, other letters) into spaces.

    Umlauts are composed first (NFC), so `u` + combining diaeresis counts as `ü`. `ß` stays `ß`
    (no `ss` folding), as German spelling writes it.

    >>> normalize_german("Grüß Gott! Es ist 5 vor 12 – auf der Straße.")
    'grüß gott es ist fünf vor zwölf auf der straße'
    """
    text = unicodedata.normalize("NFC", spell_numbers(text)).lower()
    text = _DROP.sub(" ", text).replace(" '", " ").replace("' ", " ")
    return " ".join(text.split()).strip("'")
