"""Output vocabularies: English characters and bigrams, Mandarin characters or pinyin,
SentencePiece."""

from ds2hub.tokenizers.base import BLANK, Tokenizer
from ds2hub.tokenizers.bigrams import BigramTokenizer, split_bigrams
from ds2hub.tokenizers.chars import CharTokenizer
from ds2hub.tokenizers.mandarin import MandarinTokenizer
from ds2hub.tokenizers.normalizers import normalize_english, normalize_mandarin
from ds2hub.tokenizers.pinyin import PinyinTokenizer
from ds2hub.tokenizers.registry import available_tokenizers, load_tokenizer, tokenizer_from_config
from ds2hub.tokenizers.sentencepiece import SentencePieceTokenizer

__all__ = [
    "BLANK",
    "BigramTokenizer",
    "CharTokenizer",
    "MandarinTokenizer",
    "PinyinTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "available_tokenizers",
    "load_tokenizer",
    "normalize_english",
    "normalize_mandarin",
    "split_bigrams",
    "tokenizer_from_config",
]
