"""N-gram language models: interpolated modified Kneser-Ney estimation, ARPA files in and out.

`build_ngram(lines, order, units)` counts the n-grams of a text and estimates the model KenLM's
`lmplz` estimates (Chen & Goodman 1998, "An empirical study of smoothing techniques", section 3;
Heafield et al. 2013, "Scalable modified Kneser-Ney language model estimation"):

- Each sentence is padded as `<s> w1 ... wk </s>`; `<s>` is never predicted (p = 0, -99 in ARPA).
- Counts: the highest order uses raw counts; a lower-order n-gram uses its *continuation* count,
  the number of distinct words seen to its left, except n-grams starting with `<s>` (nothing
  can stand to their left), which keep raw counts.
- Three discounts per order from that order's count-of-counts t_k (n-grams with count k):
  Y = t1 / (t1 + 2 t2), D_k = k - (k + 1) Y t_{k+1} / t_k for k = 1, 2 and D_3+ = D_3. Where
  they cannot be computed (some t_k = 0 on tiny texts) or fall outside (0, k), the order uses
  lmplz's `--discount_fallback` values 0.5, 1, 1.5 (logged, and kept in `NGramModel.discounts`).
- p(w | h) = (c(hw) - D(c(hw))) / sum_v c(hv) + gamma(h) p(w | h'), with h' the history minus its
  first word and gamma(h) = (D1 N1(h) + D2 N2(h) + D3+ N3+(h)) / sum_v c(hv), N_k(h) the number of
  words following h with count k (3 or more for N3+). Unigrams interpolate with the uniform
  distribution over the vocabulary without `<s>`, so `<unk>` (never counted) gets gamma() / (|V|-1).
- In backoff form the ARPA file stores the interpolated p(w | h) of every n-gram in the text and
  the backoff weight gamma(h) on each history h, so p(w | h) = gamma(h) p(w | h') for unseen hw
  and every history's probabilities sum to 1.

Estimated here because no Python package installs `lmplz` (PyPI's `kenlm` only queries), and
ds2hub's corpora take seconds in pure Python; for millions of sentences run `lmplz` instead.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ds2hub.errors import ConfigError

log = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPECIAL = (BOS, EOS, UNK)
LOG10_ZERO = -99.0  # how ARPA files write log10(0), e.g. p(<s>)
LOG10_MISSING_UNK = -100.0  # KenLM's p(<unk>) for an ARPA file without `<unk>`
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # lmplz --discount_fallback
UNITS = ("word", "char")
SPACE_TOKEN = "|"  # a kept space in character LMs: flashlight's word-boundary token
Gram = tuple[str, ...]
Table = dict[Gram, tuple[float, float | None]]  # n-gram -> (log10 p(w | h), log10 backoff)
Discounts = tuple[float, float, float]  # (D1, D2, D3+)


# --- text -> tokens ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextUnits:
    """How a line of text becomes LM tokens (use the same for building and for scoring).

    Args:
        unit: `word` (whitespace-separated tokens) or `char` (every character a token).
        normalize: applied to each line first, e.g. the model tokenizer's `normalize`, so the LM
            vocabulary is what the decoder emits. None: the text as it is.
        segment: words only: `"jieba"` (Chinese word segmentation, imported only when used) or a
            callable `str -> list[str]`. None: split on whitespace.
        keep_spaces: characters only: a run of whitespace becomes the token `|` (`SPACE_TOKEN`;
            default: dropped, as Mandarin character LMs ignore segmentation spaces).
    """

    unit: str = "word"
    normalize: Callable[[str], str] | None = None
    segment: str | Callable[[str], list[str]] | None = None
    keep_spaces: bool = False
    _segmenter: Callable[[str], list[str]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ConfigError(f"LM unit must be one of {UNITS}, not {self.unit!r}")
        if self.segment is not None and self.unit != "word":
            raise ConfigError("segmentation (segment=...) applies to unit 'word' only")
        if self.keep_spaces and self.unit != "char":
            raise ConfigError("keep_spaces applies to unit 'char' only")
        segmenter = self.segment
        if segmenter == "jieba":
            from ds2hub.extras import require

            # Lazily (loading its dictionary takes a second), and with a one-line message naming
            # the `mandarin` extra when jieba is missing.
            jieba = require("jieba", "mandarin")
            jieba.setLogLevel(logging.WARNING)
            segmenter = jieba.lcut
        elif isinstance(segmenter, str):
            raise ConfigError(f"unknown segmenter {segmenter!r}; known: 'jieba' or a callable")
        object.__setattr__(self, "_segmenter", segmenter)

    def split(self, line: str) -> list[str]:
        """One line of text -> its tokens (no `<s>`/`</s>`)."""
        if self.normalize is not None:
            line = self.normalize(line)
        if self.unit == "char":
            if not self.keep_spaces:
                return [ch for ch in line if not ch.isspace()]
            # each inner run of whitespace becomes one space token; the ends are stripped
            return [SPACE_TOKEN if ch == " " else ch for ch in " ".join(line.split())]
        if self._segmenter is not None:
            # whitespace inside a segment would split it in the ARPA file: make it two words
            return [t for w in self._segmenter(line) for t in w.split()]
        return line.split()


# --- held-out text ------------------------------------------------------------------------------
def heldout_split(lines: Iterable[str], n: int = 200, seed: int = 0) -> tuple[list[str], list[str]]:
    """Splits sentences into LM/training text and `n` held-out sentences: a seeded random sample of
    the non-empty lines, in file order, that depends only on the lines, `n` and `seed` (a speech
    test set and an LM's perplexity text drawn alike are the same sentences). Training lines
    identical to a held-out sentence are dropped too, so nothing held out is in the training text.

    Returns:
        (training lines, held-out lines), both stripped.
    """
    text = [line for line in map(str.strip, lines) if line]
    if not 0 < n < len(text):
        raise ConfigError(f"cannot hold out {n} of {len(text)} non-empty lines")
    picked = set(random.Random(seed).sample(range(len(text)), n))
    heldout = [line for i, line in enumerate(text) if i in picked]
    held = set(heldout)
    return [line for line in text if line not in held], heldout


def lines_without(lines: Iterable[str], words: Iterable[str], min_length: int = 2) -> list[str]:
    """The lines that contain none of `words` (e.g. LM text without the held-out test words).

    A word of `min_length` characters or more is matched anywhere in a line (`市场` also drops
    `市场经济`); a shorter word (a single Chinese character) only drops lines that are exactly that
    word, because a common character occurs in most of any text and the LM must still know it.
    Surrounding whitespace is ignored.
    """
    words = {w.strip() for w in words if w.strip()}
    whole = {w for w in words if len(w) < min_length}
    inner = words - whole
    lengths = sorted({len(w) for w in inner})
    kept = []
    for line in lines:
        text = line.strip()
        spans = (text[i : i + k] for k in lengths for i in range(len(text) - k + 1))
        if text not in whole and not any(span in inner for span in spans):
            kept.append(line)
    return kept


# --- the model -------------------------------------------------------------------------------------
@dataclass
class Perplexity:
    """Perplexity of a text, counted as KenLM's `query` counts: every token and each `</s>`."""

    sentences: int
    tokens: int  # words or characters, without `</s>`
    oov: int  # tokens outside the vocabulary (scored as `<unk>`)
    log10_prob: float  # total, `<unk>` scores included
    log10_prob_known: float  # total without the OOV tokens' scores

    @property
    def perplexity(self) -> float:
        """10^(-log10 p / (tokens + sentences)), OOV tokens scored as `<unk>`."""
        return 10 ** (-self.log10_prob / max(1, self.tokens + self.sentences))

    @property
    def perplexity_known(self) -> float:
        """The same without OOV tokens (KenLM's "Perplexity excluding OOVs")."""
        return 10 ** (-self.log10_prob_known / max(1, self.tokens + self.sentences - self.oov))


class NGramModel:
    """A backoff n-gram model, as an ARPA file holds it.

    Args:
        grams: one dict per order (index 0: unigrams) mapping each n-gram to
            (log10 p(w | h), log10 backoff weight or None when the n-gram is never a history).
        discounts: per order, the (D1, D2, D3+) it was estimated with (empty when read from ARPA).
    """

    def __init__(self, grams: list[Table], discounts: Sequence[Discounts] = ()) -> None:
        if not grams or not grams[0]:
            raise ValueError("an n-gram model needs unigrams")
        self.grams = grams
        self.discounts = list(discounts)

    @property
    def order(self) -> int:
        return len(self.grams)

    @property
    def counts(self) -> list[int]:
        """Number of n-grams per order (what the ARPA header lists)."""
        return [len(g) for g in self.grams]

    @property
    def vocabulary(self) -> list[str]:
        """The words the model predicts or conditions on, without `<s>`, `</s>` and `<unk>`
        (what pyctcdecode's `unigrams.txt` lists), in file order."""
        return [g[0] for g in self.grams[0] if g[0] not in SPECIAL]

    def logprob(self, word: str, history: Sequence[str] = ()) -> float:
        """log10 p(word | history) through the backoff weights; unknown words are `<unk>`.

        Args:
            word: the predicted token (`</s>` for the end of a sentence).
            history: the preceding tokens (`<s>` first for the start of a sentence); only the
                last `order - 1` count.
        """
        unigrams = self.grams[0]
        if (word,) not in unigrams:
            word = UNK
            if (UNK,) not in unigrams:
                return LOG10_MISSING_UNK
        keep = self.order - 1
        context = tuple(w if (w,) in unigrams else UNK for w in history)[-keep:] if keep else ()
        penalty = 0.0
        # ends at the unigram at the latest: `word` is one (or `<unk>`, checked above)
        while (entry := self.grams[len(context)].get((*context, word))) is None:
            penalty += self.grams[len(context) - 1].get(context, (0.0, None))[1] or 0.0
            context = context[1:]
        return penalty + entry[0]

    def score(self, tokens: Sequence[str]) -> float:
        """log10 p of a token sequence (`<s>` as its first history and `</s>` at its end)."""
        padded = [BOS, *tokens, EOS]
        return sum(self.logprob(padded[i], padded[:i]) for i in range(1, len(padded)))

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> Perplexity:
        """Perplexity of tokenized sentences (see `TextUnits.split`)."""
        unigrams = self.grams[0]
        result = Perplexity(0, 0, 0, 0.0, 0.0)
        for tokens in sentences:
            history = [BOS]
            result.sentences += 1
            for token in [*tokens, EOS]:
                p = self.logprob(token, history)
                result.log10_prob += p
                if token != EOS:
                    result.tokens += 1
                if (token,) in unigrams and token != UNK:
                    result.log10_prob_known += p
                else:
                    result.oov += 1
                history.append(token)
        return result

    def history_mass(self, history: Sequence[str]) -> float:
        """sum over the vocabulary (and `</s>`, `<unk>`) of p(w | history); 1 for a proper model."""
        return sum(10 ** self.logprob(g[0], history) for g in self.grams[0] if g[0] != BOS)

    def write_arpa(self, path: str | Path) -> None:
        """Writes the model as an ARPA file (atomically: a reader never sees half a file)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\\data\\\n")
            f.writelines(f"ngram {n}={len(grams)}\n" for n, grams in enumerate(self.grams, 1))
            for n, grams in enumerate(self.grams, 1):
                f.write(f"\n\\{n}-grams:\n")
                for g, (p, b) in grams.items():
                    backoff = "" if b is None else f"\t{b:.7g}"
                    f.write(f"{p:.7g}\t{' '.join(g)}{backoff}\n")
            f.write("\n\\end\\\n")
        os.replace(tmp, path)

    def __repr__(self) -> str:
        return f"NGramModel(order={self.order}, counts={self.counts})"


# --- estimation ----------------------------------------------------------------------------------
def count_ngrams(
    sentences: Iterable[Sequence[str]], order: int, repeats: Iterable[int] | None = None
) -> list[Counter[Gram]]:
    """Raw counts of every n-gram up to `order` in `<s> tokens </s>` padded sentences, each
    sentence counted `repeats[i]` times (default once)."""
    counts: list[Counter[Gram]] = [Counter() for _ in range(order)]
    for tokens, k in zip(sentences, repeats or itertools.repeat(1)):
        padded = (BOS, *tokens, EOS)
        for n, table in enumerate(counts, 1):
            grams = (padded[i : i + n] for i in range(len(padded) - n + 1))
            if k == 1:
                table.update(grams)  # Counter's C loop: the common case, and the fast one
            else:
                for g in grams:
                    table[g] += k
    return counts


def discounts_from(counts: Iterable[int], order: int) -> Discounts:
    """(D1, D2, D3+) from the count-of-counts, or lmplz's fallback where they do not exist."""
    t = Counter(c for c in counts if c <= 4)
    if all(t[k] for k in range(1, 5)):
        y = t[1] / (t[1] + 2 * t[2])
        d = tuple(k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3))
        if all(0 < d[k - 1] < k for k in (1, 2, 3)):
            return d  # type: ignore[return-value]
    log.warning(
        "%d-grams: count-of-counts %s give no usable Kneser-Ney discounts (a small text); using %s",
        order,
        [t[k] for k in range(1, 5)],
        FALLBACK_DISCOUNTS,
    )
    return FALLBACK_DISCOUNTS


def estimate_kneser_ney(
    raw: list[Counter[Gram]], discounts: Sequence[Discounts] | None = None
) -> NGramModel:
    """Interpolated modified Kneser-Ney from raw counts (see the module doc for the formulas).

    Args:
        raw: `count_ngrams` output.
        discounts: (D1, D2, D3+) per order instead of those estimated from the counts.
    """
    order = len(raw)
    # Modified Kneser-Ney counts (see "Counts" in the module doc)
    adjusted: list[dict[Gram, int]] = [dict(raw[-1])]
    for n in range(order - 1, 0, -1):  # n: the order being adjusted
        left = Counter(g[1:] for g in raw[n])  # (n+1)-grams by their n-word suffix
        adjusted.insert(0, {g: (c if g[0] == BOS else left[g]) for g, c in raw[n - 1].items()})
    adjusted[0].pop((BOS,), None)  # never predicted: no count, no probability mass
    adjusted[0].setdefault((EOS,), 0)
    adjusted[0].setdefault((UNK,), 0)
    if discounts is None:
        discounts = [discounts_from(a.values(), n) for n, a in enumerate(adjusted, 1)]
    if len(discounts) != order or not all(
        len(d) == 3 and all(0 < d[k - 1] <= k for k in (1, 2, 3)) for d in discounts
    ):
        raise ConfigError(
            f"discounts must be {order} triples (D1, D2, D3+) with 0 < D_k <= k, not {discounts}"
        )

    grams: list[Table] = []
    lower: dict[Gram, float] = {}  # p(w | h') of the order below, as probabilities
    uniform = 1.0 / len(adjusted[0])  # every unigram but <s>
    for n in range(1, order + 1):
        discount = (0.0, *discounts[n - 1])  # by count, up to 3+ (0: <unk>, </s> never counted)
        counts = adjusted[n - 1]
        # Two passes over the n-grams instead of grouping them: per history h, the total count
        # and the discounted mass D1 N1(h) + D2 N2(h) + D3+ N3+(h), so gamma(h) = mass / total.
        total: dict[Gram, int] = defaultdict(int)
        mass: dict[Gram, float] = defaultdict(float)
        for g, c in counts.items():
            h = g[:-1]
            total[h] += c
            mass[h] += discount[min(c, 3)]
        probs: dict[Gram, float] = {}
        for g, c in counts.items():
            h = g[:-1]
            below = uniform if n == 1 else lower[g[1:]]
            probs[g] = (c - discount[min(c, 3)] + mass[h] * below) / total[h]
        # backoff weights of this order's histories sit on the order below
        if n > 1:
            previous = grams[n - 2]
            for h, t in total.items():
                previous[h] = (previous[h][0], math.log10(mass[h] / t))
        table: Table = {(BOS,): (LOG10_ZERO, None)} if n == 1 else {}
        table.update((g, (math.log10(p), None)) for g, p in probs.items())
        grams.append(table)
        lower = probs
    return NGramModel(grams, discounts)


def build_ngram(
    lines: Iterable[str],
    order: int,
    units: TextUnits | str = "word",
    discounts: Sequence[Discounts] | None = None,
    repeats: Iterable[int] | None = None,
) -> NGramModel:
    """Estimates an interpolated modified Kneser-Ney n-gram model from text, one sentence a line.

    Args:
        lines: the text; blank lines (after normalisation) are skipped.
        order: n of the n-grams (1 or more; KenLM-based decoders need 2 or more).
        units: `TextUnits` or just its unit name (`word` or `char`).
        discounts: fixed (D1, D2, D3+) per order instead of those estimated from the counts.
        repeats: how many times each line counts (positive integers, one per line), e.g. the
            frequencies of a word list such as jieba's dictionary; default once each.

    Raises:
        ConfigError: order below 1, a text without tokens, `<s>`/`</s>` written in the text, a
            text too short for the order, or a repeat count that is not a positive integer.
    """
    if not isinstance(order, int) or order < 1:
        raise ConfigError(f"LM order must be an integer of at least 1, not {order!r}")
    units = units if isinstance(units, TextUnits) else TextUnits(unit=units)
    lines = list(lines)
    times = [1] * len(lines) if repeats is None else list(repeats)
    if len(times) != len(lines):
        raise ConfigError(f"{len(times)} repeat counts for {len(lines)} lines")
    sentences, kept = [], []
    for number, (line, k) in enumerate(zip(lines, times), 1):
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"line {number}: repeat count {k!r} is not a positive integer")
        tokens = units.split(line)
        if BOS in tokens or EOS in tokens:
            raise ConfigError(
                f"line {number} contains {BOS} or {EOS}: the LM adds sentence markers itself; "
                "remove them from the text"
            )
        if tokens:
            sentences.append(tokens)
            kept.append(k)
    if not sentences:
        raise ConfigError("the LM text has no tokens (empty, or nothing left after normalisation)")
    raw = count_ngrams(sentences, order, None if repeats is None else kept)
    missing = [n for n in range(1, order + 1) if not raw[n - 1]]
    if missing:
        longest = max(map(len, sentences)) + 2
        raise ConfigError(
            f"no {missing[0]}-grams in the text: its longest sentence has {longest} tokens with "
            f"<s> and </s>; use an order of at most {longest}"
        )
    return estimate_kneser_ney(raw, discounts)


# --- reading ARPA --------------------------------------------------------------------------------
def read_arpa(path: str | Path) -> NGramModel:
    """Reads and checks an ARPA file (ds2hub's or KenLM's `lmplz`) with every check of
    `ds2hub.decoding.lm.read_arpa_tables`, and that `<s>` and `</s>` are among the unigrams.

    Raises:
        ds2hub.decoding.lm.ArpaError: what is wrong, with the file and line number.
        FileNotFoundError: no such file.
    """
    # Imported on use: the `ds2hub.decoding` package loads torch, which building an LM never needs.
    from ds2hub.decoding.lm import ArpaError, read_arpa_tables

    _, grams = read_arpa_tables(path)
    for token in (BOS, EOS):
        if (token,) not in grams[0]:
            raise ArpaError(f"{path}: the unigrams lack {token}")
    return NGramModel(grams)
