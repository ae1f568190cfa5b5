"""CTC decoding: logits -> text. Greedy best path, or beam search with an n-gram language model
through one of two backends (flashlight, pyctcdecode); lexicons, LM checks, the pinyin ->
characters search and the hub folder's decoding files all live here."""

from ds2hub.decoding.config import GREEDY, DecoderConfig
from ds2hub.decoding.decoder import (
    Decoding,
    TextDecoder,
    describe_decoding,
    greedy_text_decoder,
    text_decoder,
)
from ds2hub.decoding.greedy import greedy_decode
from ds2hub.decoding.lexicon import LexiconEntry, read_word_counts, write_unigram_arpa

__all__ = [
    "GREEDY",
    "DecoderConfig",
    "Decoding",
    "LexiconEntry",
    "TextDecoder",
    "describe_decoding",
    "greedy_decode",
    "greedy_text_decoder",
    "read_word_counts",
    "text_decoder",
    "write_unigram_arpa",
]
