"""LM files for decoding: the ARPA reader, checks before a search is built, pyctcdecode's scorer.

A decoder that loads a wrong LM does not fail: every word becomes `<unk>` and the search quietly
runs on acoustics alone. So `inspect_lm` checks the file first.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from ds2hub.errors import ConfigError
from ds2hub.extras import PYCTCDECODE_MISSING

log = logging.getLogger(__name__)

SPECIAL_WORDS = frozenset({"<s>", "</s>", "<unk>"})
KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"
LOW_COVERAGE = 0.5  # below this share, the coverage is reported as a warning


@dataclass(frozen=True)
class LMInfo:
    """What a language model file holds: its order and its vocabulary (specials excluded)."""

    path: Path
    order: int | None  # None for a KenLM binary (its header is not read here)
    vocabulary: frozenset[str]
    binary: bool


class ArpaError(ConfigError):
    """An ARPA file that is not a valid backoff n-gram model (the message names file and line)."""


ArpaTable = dict[tuple[str, ...], tuple[float, float | None]]  # n-gram -> (log10 p, backoff)


def read_arpa_tables(
    path: str | Path, max_order: int | None = None
) -> tuple[list[int], list[ArpaTable]]:
    """Reads and checks an ARPA file (ds2hub's or KenLM's `lmplz`), line by line.

    Checked: the `\\data\\` header and one section per declared order with as many n-grams as
    declared, and the final `\\end\\` (a truncated file fails); in the sections read (up to
    `max_order`), numbers that parse, log10 probabilities at most 0, no duplicate n-grams, and
    every n-gram's history present one order below.

    Args:
        max_order: the highest order whose n-grams are parsed and returned (None: all); higher
            sections are only counted, so checking a large LM's vocabulary stays cheap.
    Returns:
        the declared n-gram count of every order, and the n-grams of each order read.
    Raises:
        ArpaError: what is wrong, with the file and line number.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return _read_arpa(f, path, max_order)
    except UnicodeDecodeError as error:
        raise ArpaError(f"{path} is not UTF-8 text (a binary KenLM file?): {error}") from None


def _read_arpa(f, path: Path, max_order: int | None) -> tuple[list[int], list[ArpaTable]]:
    lines = ((number, raw.strip()) for number, raw in enumerate(f, 1))
    if not any(text == "\\data\\" for _, text in lines):  # stops after the header line
        raise ArpaError(f"{path}: no \\data\\ header; not an ARPA file")
    with path.open("rb") as tail:
        tail.seek(max(0, tail.seek(0, 2) - 64))  # the last 64 bytes
        if not tail.read().strip().endswith(b"\\end\\"):
            raise ArpaError(f"{path} is truncated: it does not end with \\end\\")
    declared: list[int] = []
    number, text = next(lines, (1, None))
    while text is not None and text.startswith("ngram "):
        try:
            n, count = (int(x) for x in text[len("ngram ") :].split("="))
        except ValueError:
            raise ArpaError(f"{path}:{number}: bad header line {text!r}") from None
        if n != len(declared) + 1 or count < 0:
            raise ArpaError(f"{path}:{number}: header lists order {n} out of sequence")
        declared.append(count)
        number, text = next(lines, (number + 1, None))
    if not declared:
        raise ArpaError(f"{path}: the \\data\\ header declares no n-gram counts")
    grams: list[ArpaTable] = []
    for n, count in enumerate(declared, 1):
        while text == "":
            number, text = next(lines, (number + 1, None))
        if text != f"\\{n}-grams:":
            found = repr(text) if text is not None else "the end of the file"
            raise ArpaError(f"{path}:{number}: expected the \\{n}-grams: section, found {found}")
        read = max_order is None or n <= max_order
        table: ArpaTable = {}
        size = 0
        number, text = next(lines, (number + 1, None))
        while text and not text.startswith("\\"):
            if read:
                table_entry(table, text, n, f"{path}:{number}")
            size += 1
            number, text = next(lines, (number + 1, None))
        if size != count:
            name = "unigrams" if n == 1 else f"{n}-grams"
            raise ArpaError(f"{path}: the header declares {count} {name}, the section has {size}")
        if not read:
            continue
        for g in table if n > 1 else ():  # every word a unigram, every history one order below
            if (g[-1],) not in grams[0]:
                raise ArpaError(
                    f"{path}: {n}-gram {' '.join(g)!r} ends in {g[-1]!r}, which is not "
                    "among the unigrams"
                )
            if g[:-1] not in grams[-1]:
                raise ArpaError(
                    f"{path}: {n}-gram {' '.join(g)!r} has no {n - 1}-gram "
                    f"{' '.join(g[:-1])!r} for its history"
                )
        grams.append(table)
    while text == "":
        number, text = next(lines, (number + 1, None))
    if text != "\\end\\":
        raise ArpaError(f"{path}: no \\end\\ after the {len(declared)}-grams (a truncated file?)")
    return declared, grams


def table_entry(table: ArpaTable, line: str, n: int, where: str) -> None:
    """Parses one `log10p w1 .. wn [backoff]` line of an ARPA section into `table`."""
    parts = line.split()
    if len(parts) not in (n + 1, n + 2):
        raise ArpaError(
            f"{where}: expected a log10 probability, {n} words and optionally a backoff weight, "
            f"found {line!r}"
        )
    try:
        p = float(parts[0])
        b = float(parts[n + 1]) if len(parts) == n + 2 else None
    except ValueError:
        raise ArpaError(f"{where}: not a number in {line!r}") from None
    if not math.isfinite(p) or p > 1e-6 or (b is not None and not math.isfinite(b)):
        raise ArpaError(f"{where}: log10 probability {parts[0]} is not a finite number <= 0")
    g = tuple(parts[1 : n + 1])
    if g in table:
        raise ArpaError(f"{where}: duplicate {n}-gram {' '.join(g)!r}")
    table[g] = (p, b)


def inspect_lm(
    path: str | Path, expected_order: int | None = None, unigrams: str | Path | None = None
) -> LMInfo:
    """Reads and checks a language model file: it must exist, be an ARPA file with a consistent
    header (or a KenLM binary with its word list) and have the expected order.

    Args:
        path: ARPA text or a KenLM binary.
        expected_order: refuse a model of another order (None: any).
        unigrams: a word list (one word a line) for a binary, whose vocabulary is not read here;
            default: `unigrams.txt` beside it (pyctcdecode's layout).
    Raises:
        ConfigError: missing, unreadable, truncated or inconsistent file (`ArpaError`, from
            `read_arpa_tables`), or the wrong order.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"language model {path} does not exist")
    with path.open("rb") as f:
        binary = f.read(len(KENLM_BINARY_MAGIC)) == KENLM_BINARY_MAGIC
    if binary:
        unigrams = Path(unigrams or path.parent / "unigrams.txt")
        if not unigrams.is_file():
            raise ConfigError(
                f"language model {path} is a KenLM binary: its word list (unigrams.txt) is needed "
                "to check it against the model's vocabulary"
            )
        words = unigrams.read_text(encoding="utf-8").split()
        return LMInfo(path, None, frozenset(words) - SPECIAL_WORDS, True)
    declared, grams = read_arpa_tables(path, max_order=1)
    if expected_order is not None and len(declared) != expected_order:
        raise ConfigError(
            f"language model {path} is a {len(declared)}-gram model; this decoder expects order "
            f"{expected_order}"
        )
    vocabulary = frozenset(g[0] for g in grams[0]) - SPECIAL_WORDS
    return LMInfo(path, len(declared), vocabulary, False)


def check_unit(info: LMInfo, unit: str) -> None:
    """Refuses an LM over the other unit: a character LM for a model that needs a word LM (its
    vocabulary would "cover" every lexicon word letter by letter, silently), or the reverse.

    The unit is read from `ds2hub lm build`'s record beside the file when there is one, else
    inferred from the vocabulary (every entry one character: a character LM).
    """
    record = info.path.parent / ".ds2hub-lm.json"
    built = None
    with suppress(OSError, ValueError):  # no record, or an unreadable one
        built = json.loads(record.read_text(encoding="utf-8")).get("unit")
    words = [w for w in info.vocabulary if w != "|"]  # `|`: a kept space in a character LM
    if built is None and len(words) >= 10:
        built = "char" if all(len(w) == 1 for w in words) else None
        if unit == "char" and sum(len(w) > 1 for w in words) > len(words) / 2:
            built = "word"
    if built is not None and built != unit:
        raise ConfigError(
            f"language model {info.path} is a {built} LM; this model decodes with a {unit} LM "
            f"(ds2hub lm build --unit {unit})"
        )


def coverage(units: Collection[str], vocabulary: Collection[str]) -> float:
    """Share of `units` (lexicon words, or output characters) the LM's vocabulary knows."""
    vocab = set(vocabulary)
    return sum(u in vocab for u in units) / len(units) if units else 0.0


def check_coverage(share: float, what: str, lm: Path) -> float:
    """Refuses an LM that knows none of `what`; logs a warning with the figure when it knows
    little. Returns `share`."""
    if share == 0.0:
        raise ConfigError(
            f"language model {lm} knows none of the {what}: wrong vocabulary (a word LM for a "
            "character model, another language or another text normalisation?)"
        )
    if share < LOW_COVERAGE:
        log.warning("language model %s covers only %.1f %% of the %s", lm, 100 * share, what)
    else:
        log.info("language model %s covers %.1f %% of the %s", lm, 100 * share, what)
    return share


def kenlm_scorer(
    path: str | Path,
    unigrams: Iterable[str],
    order: int,
    alpha: float,
    beta: float,
    unk_score_offset: float = -10.0,
    score_boundary: bool = True,
):
    """pyctcdecode's language model over a KenLM file, scored by flashlight-text's compiled KenLM
    exactly as pyctcdecode's `LanguageModel.score` does (which needs the `kenlm` module, on PyPI
    only as C++ source)."""
    try:
        from pyctcdecode.constants import AVG_TOKEN_LEN, LOG_BASE_CHANGE_FACTOR
        from pyctcdecode.language_model import AbstractLanguageModel
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError(PYCTCDECODE_MISSING) from e
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary
    from pygtrie import CharTrie

    class FlashlightKenLM(AbstractLanguageModel):
        def __init__(self) -> None:
            words = sorted(frozenset(unigrams))
            dictionary = Dictionary()
            for w in [*words, "<unk>"]:
                dictionary.add_entry(w)
            self._index = {w: i for i, w in enumerate(words)}
            self._unk = len(words)
            self._lm = KenLM(str(path), dictionary)
            self._trie = CharTrie.fromkeys(words)
            self.alpha, self.beta = alpha, beta
            self.unk_score_offset, self.score_boundary = unk_score_offset, score_boundary

        @property
        def order(self) -> int:
            return order

        def get_start_state(self):  # pyctcdecode keeps LM states opaque
            return self._lm.start(not self.score_boundary)

        def score_partial_token(self, partial_token: str) -> float:
            unk = self.unk_score_offset * int(not self._trie.has_node(partial_token))
            if len(partial_token) > AVG_TOKEN_LEN:
                unk = unk * len(partial_token) / AVG_TOKEN_LEN
            return unk

        def score(self, prev_state, word: str, is_last_word: bool = False):
            index = self._index.get(word, self._unk)
            state, score = self._lm.score(prev_state, index)
            if index == self._unk:
                score += self.unk_score_offset
            if is_last_word and self.score_boundary:
                score += self._lm.finish(state)[1]
            return self.alpha * score * LOG_BASE_CHANGE_FACTOR + self.beta, state

        def reset_params(self, **params) -> None:
            for name in ("alpha", "beta", "unk_score_offset", "score_boundary"):
                if params.get(name) is not None:
                    setattr(self, name, params[name])

    return FlashlightKenLM()
