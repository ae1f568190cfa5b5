"""The `Tokenizer` interface every output vocabulary implements.

A tokenizer turns a transcript into CTC target ids and CTC output ids back into text. Id 0 is always
the CTC blank, so models, decoders and losses never need to ask where it is.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ds2hub.tokenizers.normalizers import normalize_reference

BLANK = "<blank>"
# Not `tokenizer.json`: that is the file name of Hugging Face's fast-tokenizer format, which hub
# tooling would try (and fail) to parse.
CONFIG_NAME = "ds2hub_tokenizer.json"
LM_UNITS = ("word", "char")  # what an n-gram LM may score (`Tokenizer.lm_unit`)
WORD_START = "▁"  # SentencePiece's word-start mark, which pyctcdecode reads too


class Tokenizer(ABC):
    """Maps text to CTC target ids and back.

    Subclasses set `kind` (the name recorded in the tokenizer file and the entry-point registry),
    fill `self.vocab` with `vocab[0] == BLANK` and implement the abstract methods. Decoders and
    model cards read the facts below instead of asking which tokenizer they hold (except for
    `PinyinTokenizer`, whose lexicon search lives in `ds2hub.decoding`).
    """

    kind: ClassVar[str]
    blank_id: ClassVar[int] = 0
    word_joiner: ClassVar[str] = " "  # between words or stitched chunks ("" for Chinese)
    # Constructor arguments that name files; `load_tokenizer` keeps them inside the model folder.
    file_args: ClassVar[tuple[str, ...]] = ()
    vocab: list[str]

    # --- what decoders and model cards read --------------------------------------------------
    # What an n-gram LM scores: `word`, `char` (`LM_UNITS`) or None: no LM decoding (a beam search
    # with an LM is then refused, in one line, when its decoder is built).
    lm_unit: ClassVar[str | None] = None
    # The token between words (`" "`, bigrams' `_`), or None where no token marks them
    # (SentencePiece pieces start words with `▁`; a character LM's units are tokens).
    word_boundary: ClassVar[str | None] = None
    language: str | None = None  # ISO 639-1 code (`en`, `de`); None: `push` asks for --language

    # --- what subclasses implement -------------------------------------------------------------
    @abstractmethod
    def normalize(self, text: str) -> str:
        """Brings raw transcript text into the form the vocabulary covers."""

    @abstractmethod
    def _split(self, text: str) -> list[str]:
        """Splits normalized text into token strings."""

    @abstractmethod
    def _join(self, tokens: list[str]) -> str:
        """Joins token strings (blanks and repeats already removed) back into text."""

    def get_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments that rebuild this tokenizer (without `kind`)."""
        return {}

    # --- shared behaviour ----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of CTC output classes, blank included."""
        return len(self.vocab)

    @property
    def needs_fit(self) -> bool:
        """True while the vocabulary still has to be learned from training transcripts."""
        return False

    def fit(self, texts: Iterable[str]) -> Tokenizer:
        """Learns the vocabulary from training transcripts (no-op for fixed vocabularies)."""
        return self

    def _token_to_id(self) -> dict[str, int]:
        # Built lazily and cached: vocabularies are fixed once fitted.
        table = getattr(self, "_index", None)
        if table is None or len(table) != len(self.vocab):
            table = {tok: i for i, tok in enumerate(self.vocab)}
            self._index = table
        return table

    def encode(self, text: str) -> list[int]:
        """Normalizes `text` and returns its token ids (never containing the blank).

        Raises:
            ValueError: if a token is outside the vocabulary and the tokenizer has no unknown token.
        """
        index = self._token_to_id()
        tokens = self._split(self.normalize(text))
        return [index[tok] if tok in index else self._unknown_id(tok) for tok in tokens]

    def spell(self, word: str) -> tuple[str, ...] | None:
        """How this vocabulary writes `word` as one word (token strings), as lexicon searches
        need it; None if it cannot: characters outside the vocabulary, a form its normaliser
        changes, or a word boundary inside it."""
        try:
            if self.normalize(word) != word:
                return None
            tokens = tuple(self.vocab[i] for i in self.encode(word))
        except (ValueError, RuntimeError):  # outside the vocabulary, or not fitted yet
            return None
        if not tokens or (self.word_boundary is not None and self.word_boundary in tokens):
            return None
        return tokens

    def decoder_labels(self) -> list[str] | None:
        """One label per output id for a lexicon-free search (pyctcdecode): "" for the blank, a
        space for `word_boundary`, `▁` + token for a character LM's tokens (each a word; `<...>`
        tokens as they are), else the token. None: words exist only through a lexicon."""
        labels = []
        for token in self.vocab:
            if token == BLANK:
                labels.append("")
            elif token == self.word_boundary:
                labels.append(" ")
            elif self.lm_unit == "char" and not (token.startswith("<") and token.endswith(">")):
                labels.append(WORD_START + token)
            else:
                labels.append(token)
        return labels

    def uncovered(self, text: str) -> set[str]:
        """Letters and digits of `text` the vocabulary cannot write (dropped by normalisation or
        mapped to an unknown token): a transcript with any no longer matches its audio. (Checked
        after `normalize`: tokenizers whose normaliser deletes characters override it.)"""
        known = {ch for tok in self.vocab for ch in tok}
        return {ch for ch in self.normalize(text) if ch.isalnum() and ch not in known}

    @property
    def word_delimited(self) -> bool:
        """Whether decoded text separates words with spaces. Without (Chinese), a word error rate
        over whole transcripts would be a sentence error rate, and is reported as such (`ser`)."""
        return self.word_joiner != ""

    def reference(self, text: str) -> str:
        """A transcript normalised for scoring (`normalize_reference`), applied to references and
        hypotheses alike: unlike `normalize`, it never deletes what the vocabulary cannot write,
        so those words count as errors."""
        return normalize_reference(text, self.word_delimited)

    def _unknown_id(self, token: str) -> int:
        raise ValueError(f"{type(self).__name__}: token {token!r} is not in the vocabulary")

    def decode(self, ids: Sequence[int]) -> str:
        """Turns ids (already CTC-collapsed) into text; blanks are dropped."""
        return self._join([self.vocab[i] for i in ids if i != self.blank_id])

    def to_config(self) -> dict[str, Any]:
        """Everything needed to rebuild the tokenizer, as JSON for checkpoints, in jsonargparse's
        `class_path`/`init_args` form: LightningCLI reads it exactly like a recipe's."""
        return {"class_path": self.class_path(), "init_args": self.get_config()}

    @classmethod
    def class_path(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Tokenizer:
        """Inverse of `to_config`."""
        return cls(**config.get("init_args", {}))

    def save(self, directory: str | Path) -> Path:
        """Writes the tokenizer file (`CONFIG_NAME`) into `directory` and returns its path."""
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        # `kind`, not a class path: loading resolves it through the entry-point registry only.
        config = {"kind": self.kind, "init_args": self.get_config()}
        path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n")
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"
