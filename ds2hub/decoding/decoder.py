"""One entry point from log-probabilities to text, whichever search a recipe or caller asks for:
`text_decoder(tokenizer, decoding)` (`SpeechRecognizer.text_decoder` adds the model's stored
default)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath

import torch

from ds2hub.decoding.config import GREEDY, DecoderConfig
from ds2hub.decoding.greedy import greedy_decode
from ds2hub.decoding.vocabulary import decoding_vocabulary
from ds2hub.errors import ConfigError
from ds2hub.tokenizers.base import Tokenizer
from ds2hub.tokenizers.pinyin import PinyinTokenizer

TextDecoder = Callable[[torch.Tensor, torch.Tensor], list[str]]
Decoding = DecoderConfig | str | None  # a beam search, GREEDY, or None (greedy here)


def _writes_hanzi(tokenizer: Tokenizer) -> bool:
    return isinstance(tokenizer, PinyinTokenizer) and tokenizer.output == "hanzi"


def best_path_text(tokenizer: Tokenizer) -> Callable[[list[int]], str]:
    """Best-path token ids (blanks and repeats removed) -> the greedy decoder's text: the
    tokenizer's decoding, turned into characters by `HanziLexicon` for a pinyin model that writes
    them. A stream that decoded its best path as it went finishes with this."""
    if not _writes_hanzi(tokenizer):
        return tokenizer.decode
    from ds2hub.decoding.hanzi import hanzi_lexicon, split_syllables

    lexicon = hanzi_lexicon(tokenizer.lexicon_path, tokenizer.lexicon_min_count)
    return lambda ids: lexicon.to_hanzi(split_syllables(tokenizer.decode(ids)))


def greedy_text_decoder(tokenizer: Tokenizer) -> TextDecoder:
    """Best path, blanks and repeats removed, then `best_path_text`."""
    to_text = best_path_text(tokenizer)

    def greedy(logits: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        return [to_text(ids) for ids in greedy_decode(logits, lengths, tokenizer.blank_id)]

    return greedy


def text_decoder(tokenizer: Tokenizer, decoding: Decoding = None) -> TextDecoder:
    """A decoder `(log_probs (B, T, V), lengths (B,)) -> list[str]`.

    Args:
        tokenizer: the model's output vocabulary.
        decoding: a `DecoderConfig` (beam search with its backend and LM), `GREEDY` or None
            (both greedy).
    Raises:
        ConfigError: an unknown setting, or an LM/lexicon the backend cannot use (checked here,
            when the decoder is built, never midway through a search).
    """
    if decoding is None or decoding == GREEDY:
        return greedy_text_decoder(tokenizer)
    if isinstance(decoding, dict):
        decoding = DecoderConfig.from_dict(decoding)
    if not isinstance(decoding, DecoderConfig):
        raise ConfigError(f"decoding must be a DecoderConfig, {GREEDY!r} or None, not {decoding!r}")
    if decoding.backend == "pyctcdecode":
        from ds2hub.decoding.pyctc import PyCTCDecoder

        return PyCTCDecoder(tokenizer, decoding)
    from ds2hub.decoding.flashlight import FlashlightDecoder

    return FlashlightDecoder(tokenizer, decoding)


def describe_decoding(decoding: Decoding, tokenizer: Tokenizer) -> str:
    """How figures were decoded, in words, for model cards and logs; derived from the setting
    that ran, so a card never names a decoding it did not use."""
    if decoding is None or decoding == GREEDY:
        if _writes_hanzi(tokenizer):
            return (
                "greedy CTC decoding (best path); syllables turned into characters by a word "
                "unigram search over the model's word list, no n-gram language model"
            )
        return "greedy CTC decoding (best path), no language model"
    d = decoding if isinstance(decoding, DecoderConfig) else DecoderConfig.from_dict(decoding)
    unit = decoding_vocabulary(tokenizer).unit
    if d.lm:
        order = f"{d.lm_order}-gram " if d.lm_order else "n-gram "
        lm = f"{order}{'character' if unit == 'char' else 'word'} LM `{PurePath(d.lm).name}`"
    elif d.backend == "flashlight" and unit == "word":
        lm = "a unigram word LM from the word list's counts"
    else:
        lm = "no language model"
    if d.backend == "pyctcdecode":
        search = "pyctcdecode beam search"
    elif unit == "char":
        search = "flashlight lexicon-free beam search"
    else:
        search = "flashlight lexicon beam search"
        if d.lexicon:
            search += f" (lexicon `{PurePath(d.lexicon).name}`)"
    extra = f", {len(d.hotwords)} hotwords" if d.hotwords else ""
    return f"{search}, beam {d.beam_size}, {lm}, α = {d.lm_weight:g}, β = {d.word_score:g}{extra}"
