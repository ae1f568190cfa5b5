"""How a tokenizer's outputs meet a language model, read from the tokenizer's own facts
(`Tokenizer.lm_unit`, `word_boundary`, `decoder_labels`, `word_joiner`): no tokenizer is known
here by name, so a plugin's tokenizer decodes exactly like the built-in one it derives from.

| tokenizer     | LM unit   | word boundary             | flashlight          | pyctcdecode          |
|---------------|-----------|---------------------------|---------------------|----------------------|
| chars (+ subclasses) | word | the space token        | lexicon             | regular alphabet     |
| bigrams       | word      | the `_` token             | lexicon             | regular alphabet     |
| sentencepiece | word      | `▁` starting a piece      | lexicon             | BPE alphabet         |
| mandarin      | character | every character           | lexicon-free        | BPE alphabet, `▁字`  |
| pinyin        | word      | words from the lexicon    | lexicon (homophones)| (no lexicon: refused)|
"""

from __future__ import annotations

from dataclasses import dataclass

from ds2hub.errors import ConfigError
from ds2hub.tokenizers.base import BLANK, LM_UNITS, Tokenizer

SIL = "|"  # flashlight's word-boundary token
BPE_BOUNDARY = "▁"  # SentencePiece's and pyctcdecode's word-start mark
# Tokens no LM word contains (SentencePiece's control pieces, unknown tokens).
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")


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
    extra_sil: bool = False  # flashlight's `|` is an added column the model never emits


def decoding_vocabulary(tokenizer: Tokenizer) -> DecodingVocabulary:
    """The `DecodingVocabulary` of `tokenizer`, from its facts (see the module doc).

    Raises:
        ConfigError: the tokenizer takes no LM (`lm_unit` None), names a unit or boundary token
            it does not have, or gives labels that do not match its vocabulary. One line each.
    """
    name, vocab = type(tokenizer).__name__, list(tokenizer.vocab)
    unit, boundary = tokenizer.lm_unit, tokenizer.word_boundary
    if unit is None:
        raise ConfigError(
            f"{name} (kind {tokenizer.kind!r}) cannot decode with a language model: it declares "
            "no lm_unit ('word' or 'char'); decode greedily"
        )
    if unit not in LM_UNITS:
        raise ConfigError(f"{name}.lm_unit must be one of {LM_UNITS}, not {unit!r}")
    if not vocab or vocab[0] != BLANK:
        raise ConfigError(f"{tokenizer!r}: id 0 must be the CTC blank")
    if boundary is not None and boundary not in vocab:
        raise ConfigError(f"{tokenizer!r} has no word-boundary token {boundary!r}")
    # flashlight needs a boundary token: without one, one more column, never emitted
    fl = (*vocab, SIL) if boundary is None else tuple(SIL if t == boundary else t for t in vocab)
    labels = tokenizer.decoder_labels()
    if labels is not None and len(labels) != len(vocab):
        raise ConfigError(
            f"{name}.decoder_labels() gives {len(labels)} labels for {len(vocab)} output ids"
        )
    return DecodingVocabulary(
        unit,
        fl,
        None if labels is None else tuple(labels),
        tokenizer.word_joiner,
        extra_sil=boundary is None,
    )


def spell(tokenizer: Tokenizer, word: str) -> tuple[str, ...] | None:
    """`word` in flashlight's token names (`Tokenizer.spell`: the tokens themselves, as only the
    word boundary is renamed), or None if the model cannot write it as one word (see there) or
    only with an unknown or control token."""
    tokens = tokenizer.spell(word)
    if not tokens or SIL in tokens or any(t in SPECIAL_TOKENS or t == BLANK for t in tokens):
        return None
    return tokens


def lm_characters(tokenizer: Tokenizer) -> list[str]:
    """The output tokens a character LM scores: all but the blank and `SPECIAL_TOKENS`."""
    return [t for t in tokenizer.vocab[1:] if t not in SPECIAL_TOKENS]
