"""One entry point from logits to text, whichever search a recipe or caller asks for."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ds2hub.decoding.beam import BeamSearchConfig, LexiconBeamSearch
from ds2hub.decoding.greedy import greedy_decode
from ds2hub.tokenizers.base import Tokenizer

TextDecoder = Callable[[torch.Tensor, torch.Tensor], list[str]]


def text_decoder(tokenizer: Tokenizer, beam_search: BeamSearchConfig | None = None) -> TextDecoder:
    """(B, T, V) logits, (B,) lengths -> B texts: greedy best path, or lexicon beam search."""
    if beam_search is not None:
        return LexiconBeamSearch(tokenizer, config=beam_search)

    def greedy(logits: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        return [tokenizer.decode(ids) for ids in greedy_decode(logits, lengths, tokenizer.blank_id)]

    return greedy
