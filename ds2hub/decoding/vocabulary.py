"""How a tokenizer's outputs meet a language model: the LM's unit, word boundaries, and the token
names each backend reads.

| tokenizer     | LM unit   | word boundary             | flashlight          | pyctcdecode          |
|---------------|-----------|---------------------------|---------------------|----------------------|
| chars         | word      | the space token           | lexicon             | regular alphabet     |
| bigrams       | word      | the `_` token             | lexicon             | regular alphabet     |
| sentencepiece | word      | `▁` starting a piece      | lexicon             | BPE alphabet         |
| mandarin      | character | every character           | lexicon-free        | BPE alphabet, `▁字`  |
| pinyin        | word      | words from the lexicon    | lexicon (homophones)| (no lexicon: refused)|
"""

from __future__ import annotations

from dataclasses import dataclass

from ds2hub.errors import ConfigError
from ds2hub.tokenizers.base import BLANK, Tokenizer

SIL = "|"  # flashlight's word-boundary token
BPE_BOUNDARY = "▁"  # SentencePiece's and pyctcdecode's word-start mark
# Tokens no LM word contains (SentencePiece's control pieces, unknown tokens).
_SPECIAL = ("<unk>", "<s>", "</s>", "<pad>")


@dataclass(frozen=True)
class DecodingVocabulary:
    """A tokenizer's vocabulary in the terms of a decoder.

    Attributes:
        unit: `word` or `char`: what the LM scores.
        flashlight_tokens: one name per output id (blank `<blank>`, boundary `|`); when the
            vocabulary has no boundary token, one more (`|`) that the model never emits.
        pyctcdecode_labels: one label per output id (blank ""), or None where pyctcdecode cannot
            decode this tokenizer.
        joiner: between output words.
    """

    unit: str
    flashlight_tokens: tuple[str, ...]
    pyctcdecode_labels: tuple[str, ...] | None
    joiner: str
    lexicon_required: bool = False  # pinyin: words exist only through the lexicon

    extra_sil: bool = False  # flashlight's `|` is an added column the model never emits


def decoding_vocabulary(tokenizer: Tokenizer) -> DecodingVocabulary:
    """The `DecodingVocabulary` of a built-in tokenizer (see the module table)."""
    kind, vocab = tokenizer.kind, list(tokenizer.vocab)
    if vocab[0] != BLANK:
        raise ConfigError(f"{tokenizer!r}: id 0 must be the CTC blank")
    if kind in ("chars", "bigrams"):
        boundary = " " if kind == "chars" else "_"
        if boundary not in vocab:
            raise ConfigError(f"{tokenizer!r} has no word-boundary token {boundary!r}")
        fl = tuple(BLANK if t == BLANK else SIL if t == boundary else t for t in vocab)
        pc = tuple("" if t == BLANK else " " if t == boundary else t for t in vocab)
        return DecodingVocabulary("word", fl, pc, " ")
    if kind == "sentencepiece":
        fl = (*vocab, SIL)
        pc = tuple("" if t == BLANK else t for t in vocab)
        return DecodingVocabulary("word", fl, pc, " ", extra_sil=True)
    if kind == "mandarin":
        fl = (*vocab, SIL)
        # Each character is a word of its own for pyctcdecode: a BPE-style label starting with ▁.
        pc = tuple("" if t == BLANK else t if t in _SPECIAL else BPE_BOUNDARY + t for t in vocab)
        return DecodingVocabulary("char", fl, pc, "", extra_sil=True)
    if kind == "pinyin":
        fl = tuple(BLANK if t == BLANK else SIL if t == " " else t for t in vocab)
        return DecodingVocabulary("word", fl, None, "", lexicon_required=True)
    raise ConfigError(f"no language-model decoding is defined for {kind!r} tokenizers")


def spell(tokenizer: Tokenizer, vocab: DecodingVocabulary, word: str) -> tuple[str, ...] | None:
    """`word` in the decoder's token names, or None if the model cannot write it as one word
    (characters outside the vocabulary, an unknown piece, a boundary inside it, or a form its
    normaliser changes)."""
    try:
        if tokenizer.normalize(word) != word:
            return None
        ids = tokenizer.encode(word)
    except (ValueError, RuntimeError):
        return None
    tokens = tuple(vocab.flashlight_tokens[i] for i in ids)
    if not tokens or SIL in tokens or any(t in _SPECIAL for t in tokens):
        return None
    return tokens


def special_tokens() -> tuple[str, ...]:
    """Token names that are never part of an LM word."""
    return _SPECIAL
