"""Decoding settings: one frozen dataclass for both beam-search backends."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ds2hub.errors import ConfigError

BACKENDS = ("flashlight", "pyctcdecode")
GREEDY = "greedy"  # `text_decoder(GREEDY)`: best path, whatever the model's stored default


@dataclass(frozen=True)
class DecoderConfig:
    """CTC beam search with an n-gram language model (recipe: `model.beam_search`).

    Hypotheses are ranked by Q(y) = log p_ctc(y|x) + α log p_lm(y) + β |y| (Deep Speech 2, eq. 3),
    with |y| the number of LM units (words, or characters for a character LM).
    """

    backend: str = "flashlight"  # `flashlight` (flashlight-text's beam search) or `pyctcdecode`
    beam_size: int = 50  # hypotheses kept per frame
    lm_weight: float = 1.0  # α: weight of the LM's natural-log probability
    word_score: float = 0.0  # β: added per LM unit (positive: longer outputs)
    # ARPA or KenLM binary file; None: a unigram LM from the word list (flashlight only). Its units
    # are the tokenizer's `lm_unit`: words, or characters (Mandarin characters).
    lm: str | None = None
    lm_order: int | None = None  # expected n-gram order; a file of another order is refused
    # `word [count]` lines: words the flashlight lexicon search may write. None: the LM's words
    # (a pinyin model: its tokenizer's word list, with every reading of every word).
    lexicon: str | None = None
    hotwords: tuple[str, ...] = field(default_factory=tuple)  # boosted words (pyctcdecode)
    hotword_weight: float = 10.0  # pyctcdecode's per-hotword bonus
    beam_threshold: float = 25.0  # flashlight: drop hypotheses this far below the best
    beam_prune_logp: float = -10.0  # pyctcdecode: the same, in its own terms
    token_min_logp: float = -5.0  # pyctcdecode: tokens below this log-prob are skipped per frame

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"decoding backend must be one of {BACKENDS}, not {self.backend!r}")
        if self.beam_size < 1:
            raise ConfigError(f"beam_size must be at least 1, not {self.beam_size}")
        # YAML gives lists; a tuple keeps the config hashable (decoders are cached per setting).
        object.__setattr__(self, "hotwords", tuple(self.hotwords or ()))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hotwords": list(self.hotwords)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecoderConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown decoding settings {unknown}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> DecoderConfig:
        return replace(self, **changes)
