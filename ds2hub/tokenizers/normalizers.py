"""Text normalisers: bring transcripts of a language into the alphabet its tokenizer covers."""

from __future__ import annotations

import re
import unicodedata

_ENGLISH_DROP = re.compile(r"[^a-z' ]+")
_SPACES = re.compile(r"\s+")
# All but ASCII lowercase letters, digits and Han characters (CJK Unified Ideographs, Extension A,
# Extensions B-F, Compatibility Ideographs).
_NOT_MANDARIN = re.compile(r"[^a-z0-9\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002ebef\uf900-\ufaff]")


def normalize_english(text: str) -> str:
    """Lowercases, strips accents, maps hyphens/underscores to spaces and drops everything that is
    not `a-z`, apostrophe or space.

    >>> normalize_english("  Don't STOP—café au-lait! ")
    "don't stop cafe au lait"
    """
    # Dashes of any kind separate words; map them before the ASCII fold would delete them.
    text = "".join(" " if unicodedata.category(ch) == "Pd" else ch for ch in text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[_/]", " ", text)
    text = _ENGLISH_DROP.sub(" ", text).replace(" '", " ").replace("' ", " ")
    return _SPACES.sub(" ", text).strip(" '")


def normalize_reference(text: str, word_delimited: bool = True) -> str:
    """A transcript as it is scored (references and hypotheses alike): every word counts, whatever
    the model can write.

    Folds case and width (NFKC, `casefold`), turns dashes and other punctuation or symbols into
    spaces and keeps every letter, combining mark and digit of any script, so a model that cannot
    write digits or accents (`911`, `café`, `пошёл`) is charged for them. Apostrophes inside words
    stay. For languages written without word boundaries (`word_delimited=False`) spaces go too.

    >>> normalize_reference("Call 911 — now, Café!")
    'call 911 now café'
    >>> normalize_reference("甚至 出现 交易。", word_delimited=False)
    '甚至出现交易'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = [ch if unicodedata.category(ch)[0] in "LMN" or ch == "'" else " " for ch in text]
    words = [w.strip("'") for w in "".join(kept).split()]
    return (" " if word_delimited else "").join(w for w in words if w)


def normalize_mandarin(text: str) -> str:
    """NFKC-normalizes (full-width Latin becomes ASCII), lowercases, and keeps Han characters and
    ASCII letters/digits only. Word-segmentation spaces (AISHELL) and punctuation are removed,
    because the model emits characters with no word boundaries.

    >>> normalize_mandarin("甚至 出现 交易 几乎 停滞 的 情况。ＡＢ")
    '甚至出现交易几乎停滞的情况ab'
    """
    return _NOT_MANDARIN.sub("", unicodedata.normalize("NFKC", text).lower())


def uncovered_letters(text: str, alphabet: set[str]) -> set[str]:
    """Letters and digits of `text` outside `alphabet` once case and accents are folded, i.e. what
    an alphabetic normaliser would silently delete (digits, other scripts).

    >>> sorted(uncovered_letters("Café 42 ñ", set("abcdefghijklmnopqrstuvwxyz")))
    ['2', '4']
    """
    folded = "".join(
        ch for ch in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(ch)
    )
    return {ch for ch in folded if ch.isalnum() and ch not in alphabet}
