"""Mandarin through toned pinyin: CTC targets are pinyin letters (`xue2 sheng1`).

With little speech most of the paper's ~6,000 characters are heard a handful of times, and many
share one sound, so the model is asked for what it can hear: the toned syllable, in 32 letters.
Turning syllables into characters is a decoding question (`ds2hub.decoding.hanzi`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import ClassVar

from ds2hub.extras import LazyAttr, MissingExtra, package_folder
from ds2hub.tokenizers.base import BLANK, Tokenizer
from ds2hub.tokenizers.normalizers import normalize_mandarin

# pypinyin comes with the `mandarin` extra: imported on first use, so `import ds2hub` needs it not.
Style = LazyAttr("pypinyin", "Style", extra="mandarin")
lazy_pinyin = LazyAttr("pypinyin", "lazy_pinyin", extra="mandarin")
pinyin_dict = LazyAttr("pypinyin.pinyin_dict", "pinyin_dict", extra="mandarin")

LETTERS = [" ", *"abcdefghijklmnopqrstuvwxyz", *"12345"]  # pypinyin writes ü as v, tone 5 neutral
LEXICON_NAME = "lexicon.txt"  # a model's own word list, beside its tokenizer file


def to_pinyin(text: str) -> list[str]:
    """Han text -> toned syllables (`学生` -> `['xue2', 'sheng1']`), polyphones read in context."""
    return lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True, errors="ignore")


def jieba_dictionary() -> Path:
    """The word-frequency dictionary that ships inside the `jieba` package (`mandarin` extra)."""
    return package_folder("jieba", "mandarin") / "dict.txt"


class PinyinTokenizer(Tokenizer):
    """Mandarin transcripts as toned pinyin letters; `decode` returns pinyin. The arguments tell
    the model's decoders (`ds2hub.decoding`) which text to write, with which word list.

    Args:
        output: `hanzi` (decoders turn syllables into characters) or `pinyin`.
        lexicon: word-frequency file (`word count` lines); None: jieba's dictionary.
        lexicon_min_count: words rarer than this are left out of the lexicon (characters never).
    """

    kind = "pinyin"
    word_joiner = ""
    file_args: ClassVar[tuple[str, ...]] = ("lexicon",)  # read from the model folder only
    # A word LM over the word list's words; the space between syllables is the lexicon's boundary.
    lm_unit = "word"
    word_boundary = " "
    language = "zh"

    def __init__(
        self, output: str = "hanzi", lexicon: str | None = None, lexicon_min_count: int = 5
    ) -> None:
        if output not in ("hanzi", "pinyin"):
            raise ValueError(f"PinyinTokenizer: output must be 'hanzi' or 'pinyin', not {output!r}")
        self.output = output
        self.lexicon_path = lexicon
        self.lexicon_min_count = lexicon_min_count
        self.vocab = [BLANK, *LETTERS]

    def normalize(self, text: str) -> str:
        return normalize_mandarin(text)

    def _split(self, text: str) -> list[str]:
        return list(" ".join(to_pinyin(text)))

    def uncovered(self, text: str) -> set[str]:
        return {ch for ch in self.normalize(text) if ord(ch) not in pinyin_dict}

    def _join(self, tokens: list[str]) -> str:
        return " ".join("".join(tokens).split())

    def decoder_labels(self) -> None:
        # Words exist only through the word list (readings of Han words): no lexicon-free search.
        return None

    def get_config(self) -> dict:
        return {
            "output": self.output,
            "lexicon": self.lexicon_path,
            "lexicon_min_count": self.lexicon_min_count,
        }

    def save(self, directory: str | Path) -> Path:
        """Writes the tokenizer file; a word list of the model's own is copied beside it as
        `lexicon.txt` (loading refuses paths outside the folder); jieba's stays `null`."""
        path = super().save(directory)
        if self.lexicon_path is None:
            return path
        source = Path(self.lexicon_path).expanduser().resolve()
        try:
            packaged = source == jieba_dictionary().resolve()
        except MissingExtra:  # without jieba, no word list is its dictionary
            packaged = False
        target = Path(directory) / LEXICON_NAME
        if not packaged and source != target.resolve():
            shutil.copyfile(source, target)
        config = json.loads(path.read_text())
        config["init_args"]["lexicon"] = None if packaged else LEXICON_NAME
        path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n")
        return path
