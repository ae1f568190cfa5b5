"""n-gram language model files for decoding: checks before a search is built, and the LM scorer
pyctcdecode uses.

A decoder that loads a wrong LM does not fail: every word becomes `<unk>` and the search quietly
runs on acoustics alone. So the file is read and checked first (`inspect_lm`): it must exist, be
an ARPA file with a consistent header (or a KenLM binary with its word list), have the expected
order, and share its vocabulary with what the model can write (`coverage`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable
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


def _arpa_header_and_unigrams(path: Path) -> tuple[dict[int, int], list[str], bool]:
    counts: dict[int, int] = {}
    words: list[str] = []
    section = None
    seen_data = ended = False
    with path.open(encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            if not seen_data:
                if line != "\\data\\":
                    raise ConfigError(
                        f"language model {path} is not an ARPA file (no \\data\\ header) nor a "
                        "KenLM binary"
                    )
                seen_data = True
                section = "data"
                continue
            if line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1:].split("-")[0])
                if section > 1:
                    # Higher orders are not needed for the checks; skip to the end marker.
                    for rest in f:
                        if rest.strip() == "\\end\\":
                            ended = True
                    break
                continue
            if line == "\\end\\":
                ended = True
                break
            if section == "data":
                if not line.startswith("ngram ") or "=" not in line:
                    raise ConfigError(f"language model {path}: bad header line {line!r}")
                n, c = line[6:].split("=", 1)
                counts[int(n)] = int(c)
            elif section == 1:
                fields = line.split()
                if len(fields) < 2:
                    raise ConfigError(f"language model {path}: bad unigram line {line!r}")
                float(fields[0])
                words.append(fields[1])
    return counts, words, ended


def read_word_list_file(path: Path) -> frozenset[str]:
    return frozenset(w for w in path.read_text(encoding="utf-8").split() if w not in SPECIAL_WORDS)


def inspect_lm(
    path: str | Path, expected_order: int | None = None, unigrams: str | Path | None = None
) -> LMInfo:
    """Reads and checks a language model file (see the module doc).

    Args:
        path: ARPA text or a KenLM binary.
        expected_order: refuse a model of another order (None: any).
        unigrams: a word list (one word a line) for a binary, whose vocabulary is not read here.
    Raises:
        ConfigError: missing, unreadable, truncated or inconsistent file, or the wrong order.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"language model {path} does not exist")
    with path.open("rb") as f:
        binary = f.read(len(KENLM_BINARY_MAGIC)) == KENLM_BINARY_MAGIC
    if binary:
        if unigrams is None and (path.parent / "unigrams.txt").is_file():
            unigrams = path.parent / "unigrams.txt"  # pyctcdecode's layout keeps it beside
        if unigrams is None or not Path(unigrams).is_file():
            raise ConfigError(
                f"language model {path} is a KenLM binary: its word list (unigrams.txt) is needed "
                "to check it against the model's vocabulary"
            )
        return LMInfo(path, None, read_word_list_file(Path(unigrams)), True)
    try:
        counts, words, ended = _arpa_header_and_unigrams(path)
    except (UnicodeDecodeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"language model {path} is corrupt: {e}") from e
    if not counts or 1 not in counts:
        raise ConfigError(f"language model {path}: the ARPA header declares no unigrams")
    if not ended:
        raise ConfigError(f"language model {path} is truncated (no \\end\\ line)")
    if counts[1] != len(words):
        raise ConfigError(
            f"language model {path} is corrupt: its header declares {counts[1]} unigrams, the "
            f"file holds {len(words)}"
        )
    order = max(counts)
    if expected_order is not None and order != expected_order:
        raise ConfigError(
            f"language model {path} is a {order}-gram model; this decoder expects order "
            f"{expected_order}"
        )
    return LMInfo(path, order, frozenset(words) - SPECIAL_WORDS, False)


def check_unit(info: LMInfo, unit: str) -> None:
    """Refuses an LM over the other unit: a character LM for a model that needs a word LM (its
    vocabulary would "cover" every lexicon word letter by letter, silently), or the reverse.

    The unit is read from `ds2hub lm build`'s record beside the file when there is one, else
    inferred from the vocabulary (every entry one character: a character LM).
    """
    record = info.path.parent / ".ds2hub-lm.json"
    built = None
    if record.is_file():
        try:
            built = json.loads(record.read_text(encoding="utf-8")).get("unit")
        except (OSError, ValueError):
            built = None
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
    if not units:
        return 0.0
    vocab = vocabulary if isinstance(vocabulary, (set, frozenset)) else set(vocabulary)
    return sum(u in vocab for u in units) / len(units)


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


# --- the LM scorer for pyctcdecode ------------------------------------------------------------
def _pyctcdecode_lm_base() -> type:
    try:
        from pyctcdecode.language_model import AbstractLanguageModel
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError(PYCTCDECODE_MISSING) from e
    return AbstractLanguageModel


def kenlm_scorer(
    path: str | Path,
    unigrams: Iterable[str],
    order: int,
    alpha: float,
    beta: float,
    unk_score_offset: float = -10.0,
    score_boundary: bool = True,
):
    """pyctcdecode's language model over a KenLM file, scored by flashlight-text's KenLM.

    Why not pyctcdecode's own `LanguageModel`: it calls the `kenlm` Python module, which is not
    on PyPI as a wheel (it compiles from source and needs a C++ toolchain). flashlight-text, which
    ds2hub already depends on for torchaudio's decoder, ships a compiled KenLM; this class puts
    it behind pyctcdecode's `AbstractLanguageModel` interface and scores exactly as
    `LanguageModel.score` does (log10 -> natural log, α, β, the unknown-word offset and the
    sentence-end score), so both backends read the same files.
    """
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary
    from pyctcdecode.constants import AVG_TOKEN_LEN, LOG_BASE_CHANGE_FACTOR
    from pygtrie import CharTrie

    base = _pyctcdecode_lm_base()

    class FlashlightKenLM(base):
        def __init__(self) -> None:
            self._unigrams = frozenset(unigrams)
            words = sorted(self._unigrams)
            dictionary = Dictionary()
            for w in [*words, "<unk>"]:
                dictionary.add_entry(w)
            self._index = {w: i for i, w in enumerate(words)}
            self._unk = len(words)
            self._lm = KenLM(str(path), dictionary)
            self._trie = CharTrie.fromkeys(words)
            self._order = order
            self.alpha, self.beta = alpha, beta
            self.unk_score_offset, self.score_boundary = unk_score_offset, score_boundary

        @property
        def order(self) -> int:
            return self._order

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
