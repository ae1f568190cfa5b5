"""CTC decoders: logits -> text. Greedy best path, or beam search over a lexicon with an n-gram LM."""

from ds2hub.decoding.beam import (
    BeamSearchConfig,
    LexiconBeamSearch,
    read_word_list,
    write_unigram_arpa,
)
from ds2hub.decoding.decoder import TextDecoder, text_decoder
from ds2hub.decoding.greedy import greedy_decode

__all__ = [
    "BeamSearchConfig",
    "LexiconBeamSearch",
    "TextDecoder",
    "greedy_decode",
    "text_decoder",
    "read_word_list",
    "write_unigram_arpa",
]
