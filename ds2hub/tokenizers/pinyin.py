"""Mandarin through toned pinyin: CTC over pinyin letters, a word lexicon back to characters.

The paper's Mandarin model emits about 6,000 characters directly, learned from thousands of hours.
With little speech most characters are heard a handful of times, and many share one sound
(是/事/市/室), which no acoustic model can tell apart. So the model is asked for what it can hear:
the toned syllable, spelled with 32 letters (`xue2 sheng1`). Characters come back from a word
unigram language model over pinyin: jieba's 350k-word frequency dictionary, with pypinyin's
phrase-aware readings. Both are the field's standard Mandarin resources; only the search (a
dynamic programme over syllables, as jieba itself segments text) is written here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import ClassVar

from ds2hub.extras import LazyAttr
from ds2hub.tokenizers.base import BLANK, LexiconEntry, Tokenizer, read_word_counts
from ds2hub.tokenizers.mandarin import UNK_TEXT
from ds2hub.tokenizers.normalizers import normalize_mandarin

# pypinyin comes with the `mandarin` extra: imported on first use, so `import ds2hub` needs it not.
Style = LazyAttr("pypinyin", "Style", extra="mandarin")
lazy_pinyin = LazyAttr("pypinyin", "lazy_pinyin", extra="mandarin")
pinyin = LazyAttr("pypinyin", "pinyin", extra="mandarin")
pinyin_dict = LazyAttr("pypinyin.pinyin_dict", "pinyin_dict", extra="mandarin")

LETTERS = [" ", *"abcdefghijklmnopqrstuvwxyz", *"12345"]  # pypinyin writes ü as v, tone 5 neutral
_SYLLABLE = re.compile(r"[a-z]+[1-5]?")
_HAN = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff]+$")
MAX_WORD_SYLLABLES = 8
TONE_PENALTY = math.log(1e-3)  # per syllable matched without its tone
WORD_PENALTY = -2.0  # per word: favours one known word over a string of likelier characters
OTHER_READING_PENALTY = math.log(1e-2)  # a character's less common readings (其 ji4)
UNREADABLE_PENALTY = math.log(1e-6)  # per syllable no word explains (decoded as ⁇)
LEXICON_NAME = "lexicon.txt"  # a model's own lexicon, beside its tokenizer.json


def to_pinyin(text: str) -> list[str]:
    """Han text -> toned syllables (`学生` -> `['xue2', 'sheng1']`), polyphones read in context."""
    return lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True, errors="ignore")


def split_syllables(text: str) -> list[str]:
    """Pinyin text -> syllables; a tone digit also ends a syllable (`xue2sheng1` -> 2 syllables)."""
    return _SYLLABLE.findall(text)


def _toneless(syllables: Sequence[str]) -> tuple[str, ...]:
    return tuple(s.rstrip("12345") for s in syllables)


def jieba_dictionary() -> Path:
    """The word-frequency dictionary that ships inside the `jieba` package."""
    # Found, not imported: importing jieba pulls in the deprecated pkg_resources.
    spec = importlib.util.find_spec("jieba")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the default Mandarin lexicon needs `jieba` (pip install jieba)")
    return Path(spec.origin).parent / "dict.txt"


class HanziLexicon:
    """Word unigram language model indexed by pinyin, turning syllables back into characters.

    Args:
        counts: (word, count) pairs; words of Han characters only are kept.
    """

    def __init__(
        self, counts: Iterable[tuple[str, float]], word_penalty: float = WORD_PENALTY
    ) -> None:
        self.word_penalty = word_penalty
        counts = [(w, c) for w, c in counts if _HAN.match(w) and c > 0]
        if not counts:
            raise ValueError("HanziLexicon: no Han words with positive counts")
        log_total = math.log(sum(c for _, c in counts))
        # Under a unigram model only the best word per reading can win, so one entry per key.
        self.exact: dict[tuple[str, ...], tuple[str, float]] = {}
        self.toneless: dict[tuple[str, ...], tuple[str, float]] = {}
        for word, count in counts:
            logp = math.log(count) - log_total
            readings = [(tuple(to_pinyin(word)), logp)]
            if len(word) == 1:  # the other readings of a character (了: le5, liao3), discounted
                others = pinyin(word, Style.TONE3, heteronym=True, neutral_tone_with_five=True)[0]
                readings += [((r,), logp + OTHER_READING_PENALTY) for r in others[1:]]
            for key, score in readings:
                if len(key) != len(word) or len(key) > MAX_WORD_SYLLABLES:
                    continue
                for table, k in ((self.exact, key), (self.toneless, _toneless(key))):
                    if k not in table or table[k][1] < score:
                        table[k] = (word, score)

    @classmethod
    def from_file(cls, path: str | Path, min_count: int = 1) -> HanziLexicon:
        """Reads `word count [tag]` lines (jieba's format); single characters are always kept."""
        counts = read_word_counts(path)
        return cls((w, c) for w, c in counts.items() if c >= min_count or len(w) == 1)

    def to_hanzi(self, syllables: Sequence[str]) -> str:
        """The most probable word sequence for `syllables`, as text.

        Spans are looked up with their tones, then without (at a penalty), so a wrong or missing
        tone still finds the word; a syllable nothing explains reads as ⁇.
        """
        n = len(syllables)
        # best[i]: (log score, start of the last word, its text) for the first i syllables
        best: list[tuple[float, int, str]] = [(0.0, 0, "")] + [(-math.inf, 0, "")] * n
        for i in range(1, n + 1):
            score, _, _ = best[i - 1]
            best[i] = (score + UNREADABLE_PENALTY, i - 1, UNK_TEXT)
            for j in range(max(0, i - MAX_WORD_SYLLABLES), i):
                span = tuple(syllables[j:i])
                hit, penalty = self.exact.get(span), 0.0
                if hit is None:
                    hit, penalty = self.toneless.get(_toneless(span)), TONE_PENALTY * len(span)
                if hit is None:
                    continue
                score = best[j][0] + hit[1] + penalty + self.word_penalty
                if score > best[i][0]:
                    best[i] = (score, j, hit[0])
        words, i = [], n
        while i > 0:
            _, j, word = best[i]
            words.append(word)
            i = j
        return "".join(reversed(words))


@cache
def _load_lexicon(path: str | None, min_count: int) -> HanziLexicon:
    # Cached per process: building the default lexicon reads 350k words (a few seconds).
    return HanziLexicon.from_file(path or jieba_dictionary(), min_count)


class PinyinTokenizer(Tokenizer):
    """Mandarin transcripts as toned pinyin letters; decodes to characters (or to pinyin).

    Args:
        output: `hanzi` (characters, through the lexicon) or `pinyin` (what the model emits).
        lexicon: word-frequency file (`word count` lines); None: jieba's dictionary.
        lexicon_min_count: words rarer than this are left out of the lexicon (characters never).
    """

    kind = "pinyin"
    word_joiner = ""
    file_args: ClassVar[tuple[str, ...]] = ("lexicon",)  # read from the model folder only

    def __init__(
        self, output: str = "hanzi", lexicon: str | None = None, lexicon_min_count: int = 5
    ) -> None:
        if output not in ("hanzi", "pinyin"):
            raise ValueError(f"PinyinTokenizer: output must be 'hanzi' or 'pinyin', not {output!r}")
        self.output = output
        self.lexicon_path = lexicon
        self.lexicon_min_count = lexicon_min_count
        self.vocab = [BLANK, *LETTERS]

    @property
    def lexicon(self) -> HanziLexicon:
        return _load_lexicon(self.lexicon_path, self.lexicon_min_count)

    def normalize(self, text: str) -> str:
        return normalize_mandarin(text)

    def _split(self, text: str) -> list[str]:
        return list(" ".join(to_pinyin(text)))

    def uncovered(self, text: str) -> set[str]:
        return {ch for ch in self.normalize(text) if ord(ch) not in pinyin_dict}

    def _join(self, tokens: list[str]) -> str:
        return " ".join("".join(tokens).split())

    def decode(self, ids: Sequence[int]) -> str:
        spelled = super().decode(ids)
        if self.output == "pinyin":
            return spelled
        return self.lexicon.to_hanzi(split_syllables(spelled))

    def lexicon_entries(self) -> list[LexiconEntry]:
        """The lexicon for beam search: each reading's best word, spelled in pinyin letters."""
        if self.output == "pinyin":
            raise ValueError("PinyinTokenizer(output='pinyin') has no word lexicon to search")
        return [
            LexiconEntry(word, tuple(" ".join(key)), logp / math.log(10), "_".join(key))
            for key, (word, logp) in self.lexicon.exact.items()
        ]

    def get_config(self) -> dict:
        return {
            "output": self.output,
            "lexicon": self.lexicon_path,
            "lexicon_min_count": self.lexicon_min_count,
        }

    def save(self, directory: str | Path) -> Path:
        """Writes `tokenizer.json`; a lexicon file of the model's own is copied beside it as
        `lexicon.txt` and named relatively, so the folder is complete and names no other file
        (loading refuses paths outside the folder). jieba's packaged dictionary stays `null`."""
        path = super().save(directory)
        if self.lexicon_path is None:
            return path
        source = Path(self.lexicon_path).expanduser().resolve()
        try:
            packaged = source == jieba_dictionary().resolve()
        except ModuleNotFoundError:
            packaged = False
        target = Path(directory) / LEXICON_NAME
        if not packaged and source != target.resolve():
            shutil.copyfile(source, target)
        config = json.loads(path.read_text())
        config["init_args"]["lexicon"] = None if packaged else LEXICON_NAME
        path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n")
        return path
