"""Pinyin back to characters (是/事/市/室 all read `shi4`): a word lexicon indexed by reading.

`HanziLexicon.to_hanzi` is a pinyin model's greedy decoding (a word unigram search over jieba's
frequencies, no LM file); `pinyin_lexicon` feeds the flashlight lexicon beam search, where a word
n-gram LM chooses between homophones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ds2hub.decoding.lexicon import read_word_counts
from ds2hub.extras import LazyAttr
from ds2hub.tokenizers.mandarin import UNK_TEXT
from ds2hub.tokenizers.pinyin import Style, jieba_dictionary, to_pinyin

pinyin = LazyAttr("pypinyin", "pinyin", extra="mandarin")  # imported on first use, as in pinyin.py

_SYLLABLE = re.compile(r"[a-z]+[1-5]?")
_HAN = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff]+$")
MAX_WORD_SYLLABLES = 8
TONE_PENALTY = math.log(1e-3)  # per syllable matched without its tone
WORD_PENALTY = -2.0  # per word: favours one known word over a string of likelier characters
OTHER_READING_PENALTY = math.log(1e-2)  # a character's less common readings (其 ji4)
UNREADABLE_PENALTY = math.log(1e-6)  # per syllable no word explains (decoded as ⁇)


def split_syllables(text: str) -> list[str]:
    """Pinyin text -> syllables; a tone digit also ends a syllable (`xue2sheng1` -> 2 syllables)."""
    return _SYLLABLE.findall(text)


def _toneless(syllables: Sequence[str]) -> tuple[str, ...]:
    return tuple(s.rstrip("12345") for s in syllables)


def is_han(word: str) -> bool:
    """Whether `word` is written in Han characters only."""
    return bool(_HAN.match(word))


def readings(word: str) -> list[tuple[tuple[str, ...], float]]:
    """Every reading of `word` as (syllables, log penalty): the phrase-aware reading first (0.0),
    then, for a single character, its other readings (了: le5, liao3) at `OTHER_READING_PENALTY`."""
    found = [(tuple(to_pinyin(word)), 0.0)]
    if len(word) == 1:
        others = pinyin(word, Style.TONE3, heteronym=True, neutral_tone_with_five=True)[0]
        found += [((r,), OTHER_READING_PENALTY) for r in others if (r,) != found[0][0]]
    return [(key, p) for key, p in found if len(key) == len(word) <= MAX_WORD_SYLLABLES]


def _han_log_probs(counts: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """(word, natural-log unigram probability) of the Han words with positive counts."""
    han = [(w, c) for w, c in counts if is_han(w) and c > 0]
    if not han:
        raise ValueError("the word list holds no Han words with positive counts")
    log_total = math.log(sum(c for _, c in han))
    return [(w, math.log(c) - log_total) for w, c in han]


@dataclass(frozen=True)
class PinyinWord:
    """One lexicon line: a word, one of its readings, and its log10 prior (as ARPA writes it)."""

    word: str
    syllables: tuple[str, ...]
    log10_prob: float

    @property
    def spelling(self) -> tuple[str, ...]:
        """The reading in pinyin letters with a space between syllables (the tokenizer's tokens)."""
        return tuple(" ".join(self.syllables))


def pinyin_lexicon(counts: dict[str, float], other_readings: bool = False) -> list[PinyinWord]:
    """Every Han word of `counts`, homophones never merged, so an LM can choose between them.
    Priors are unigram log10 probabilities.

    Args:
        other_readings: also list a single character's less common readings (了 liao3). Off for
            the LM beam search: a word LM gives all readings of a word one probability, so 的
            read `di4` would be as likely as 的 read `de5` and outvote 地/第.
    """
    return [
        PinyinWord(word, key, (logp + penalty) / math.log(10))
        for word, logp in _han_log_probs(counts.items())
        for key, penalty in (readings(word) if other_readings else readings(word)[:1])
    ]


class HanziLexicon:
    """Word unigram language model indexed by pinyin, turning syllables back into characters.

    Args:
        counts: (word, count) pairs; words of Han characters only are kept.
    """

    def __init__(self, counts: Iterable[tuple[str, float]]) -> None:
        # Under a unigram model only the best word per reading can win, so one entry per key.
        self.exact: dict[tuple[str, ...], tuple[str, float]] = {}
        self.toneless: dict[tuple[str, ...], tuple[str, float]] = {}
        for word, logp in _han_log_probs(counts):
            for key, penalty in readings(word):
                score = logp + penalty
                for table, k in ((self.exact, key), (self.toneless, _toneless(key))):
                    if k not in table or table[k][1] < score:
                        table[k] = (word, score)

    def to_hanzi(self, syllables: Sequence[str]) -> str:
        """The most probable word sequence for `syllables`, as text.

        Spans are looked up with their tones, then without (at a penalty), so a wrong or missing
        tone still finds the word; a syllable nothing explains reads as ⁇.
        """
        n = len(syllables)
        # best[i]: (log score, start of the last word, its text) for the first i syllables
        best: list[tuple[float, int, str]] = [(0.0, 0, "")] + [(-math.inf, 0, "")] * n
        for i in range(1, n + 1):
            best[i] = (best[i - 1][0] + UNREADABLE_PENALTY, i - 1, UNK_TEXT)
            for j in range(max(0, i - MAX_WORD_SYLLABLES), i):
                span = tuple(syllables[j:i])
                hit, penalty = self.exact.get(span), 0.0
                if hit is None:
                    hit, penalty = self.toneless.get(_toneless(span)), TONE_PENALTY * len(span)
                if hit is None:
                    continue
                score = best[j][0] + hit[1] + penalty + WORD_PENALTY
                if score > best[i][0]:
                    best[i] = (score, j, hit[0])
        words, i = [], n
        while i > 0:
            _, i, word = best[i]  # i: where the last word starts
            words.append(word)
        return "".join(reversed(words))


def word_counts(path: str | Path | None, min_count: int = 1) -> dict[str, float]:
    """A Mandarin word list (`word count` lines; None: jieba's dictionary); words rarer than
    `min_count` are left out, single characters never."""
    counts = read_word_counts(path or jieba_dictionary())
    return {w: c for w, c in counts.items() if c >= min_count or len(w) == 1}


@cache
def hanzi_lexicon(path: str | None, min_count: int) -> HanziLexicon:
    """The lexicon of a word list, cached per process: jieba's 350k words take a few seconds."""
    return HanziLexicon(word_counts(path, min_count).items())
