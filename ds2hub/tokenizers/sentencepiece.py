"""SentencePiece subwords (unigram or BPE) for any language without a dedicated tokenizer."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import sentencepiece as spm

from ds2hub.tokenizers.base import BLANK, Tokenizer

MODEL_NAME = "tokenizer.model"


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model whose ids are shifted by one so that id 0 is the CTC blank.

    Args:
        model_file: an existing `.model` file; if None, `fit` trains one on training transcripts.
        vocab_size: pieces to learn when training (the blank comes on top).
        model_type: `unigram` or `bpe`.
        character_coverage: SentencePiece's coverage (use ~0.9995 for large character sets).
        lowercase: lowercase text before encoding (typical for ASR transcripts).
        language: ISO 639-1 code of the transcripts (`Tokenizer.language`).

    Decoding: a word LM; a piece starting with `▁` starts a word (no token between words).
    """

    kind = "sentencepiece"
    lm_unit = "word"
    file_args: ClassVar[tuple[str, ...]] = ("model_file",)  # read from the model folder only

    def __init__(
        self,
        model_file: str | None = None,
        vocab_size: int = 256,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
        lowercase: bool = True,
        model_proto: str | None = None,
        language: str | None = None,
    ) -> None:
        if model_type not in ("unigram", "bpe"):
            raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
        self.vocab_size_target = vocab_size
        self.model_type = model_type
        self.character_coverage = character_coverage
        self.lowercase = lowercase
        self.language = language
        self.model_file = model_file
        self._sp: spm.SentencePieceProcessor | None = None
        self.vocab = [BLANK]
        if model_proto is not None:
            self._load_proto(base64.b64decode(model_proto), "model_proto")
        elif model_file is not None:
            self._load_proto(Path(model_file).read_bytes(), model_file)

    def _load_proto(self, proto: bytes, source: str = "the trained model") -> None:
        """Loads a serialised model; raises `ValueError` naming `source` if it is not one."""
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=proto)
        except RuntimeError:  # SentencePiece's parse error names only its own source line
            raise ValueError(f"{source} is not a SentencePiece model") from None
        self._proto = proto
        self.vocab = [BLANK, *(self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size()))]

    @property
    def needs_fit(self) -> bool:
        return self._sp is None

    def fit(self, texts: Iterable[str]) -> SentencePieceTokenizer:
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=(self.normalize(t) for t in texts),
            model_writer=model,
            vocab_size=self.vocab_size_target,
            model_type=self.model_type,
            character_coverage=self.character_coverage,
            bos_id=-1,
            eos_id=-1,
            unk_id=0,
            hard_vocab_limit=False,  # small corpora may not support the requested size
            minloglevel=2,
        )
        self._load_proto(model.getvalue())
        return self

    def normalize(self, text: str) -> str:
        text = " ".join(text.split())
        return text.lower() if self.lowercase else text

    def encode(self, text: str) -> list[int]:
        if self._sp is None:
            raise RuntimeError("SentencePieceTokenizer has no model yet: call fit(transcripts)")
        return [i + 1 for i in self._sp.encode(self.normalize(text))]

    def decode(self, ids) -> str:
        if self._sp is None:
            raise RuntimeError("SentencePieceTokenizer has no model yet: call fit(transcripts)")
        return self._sp.decode([int(i) - 1 for i in ids if i != self.blank_id])

    def uncovered(self, text: str) -> set[str]:
        if self._sp is None:
            return set()
        text = self.normalize(text)
        pieces = zip(self._sp.encode(text, out_type=str), self._sp.encode(text))
        unknown = "".join(piece for piece, i in pieces if i == self._sp.unk_id())
        return {ch for ch in unknown if ch.isalnum()}  # (not the word-start mark `▁`)

    def _split(self, text: str) -> list[str]:  # encode/decode are overridden
        raise NotImplementedError

    def _join(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def get_config(self) -> dict:
        config = {
            "vocab_size": self.vocab_size_target,
            "model_type": self.model_type,
            "character_coverage": self.character_coverage,
            "lowercase": self.lowercase,
        }
        if self.language is not None:
            config["language"] = self.language
        if self._sp is not None:
            # Embedded so that a checkpoint alone rebuilds the tokenizer.
            config["model_proto"] = base64.b64encode(self._proto).decode("ascii")
        return config

    def save(self, directory: str | Path) -> Path:
        """Writes the tokenizer file and, for tools that expect one, the plain `tokenizer.model`."""
        path = super().save(directory)
        if self._sp is not None:
            (Path(directory) / MODEL_NAME).write_bytes(self._proto)
        return path
