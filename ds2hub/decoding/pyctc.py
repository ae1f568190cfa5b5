"""The pyctcdecode backend: a lexicon-free beam search over the tokenizer's `decoder_labels()`
(a space, or a piece starting with `▁`, ends a word), with hotwords."""

from __future__ import annotations

import torch

from ds2hub.decoding.config import DecoderConfig
from ds2hub.decoding.lm import check_coverage, check_unit, coverage, inspect_lm, kenlm_scorer
from ds2hub.decoding.vocabulary import BPE_BOUNDARY, decoding_vocabulary, lm_characters, spell
from ds2hub.errors import ConfigError
from ds2hub.extras import PYCTCDECODE_MISSING
from ds2hub.tokenizers.base import Tokenizer


class PyCTCDecoder:
    """(B, T, V) log-probs, (B,) lengths -> B texts, with pyctcdecode's beam search.

    Args:
        tokenizer: the model's output vocabulary.
        config: the settings (`backend` is not read here; `lexicon` must be None).
    Raises:
        ConfigError: pyctcdecode missing, a tokenizer it cannot decode, a lexicon, or a missing,
            corrupt or mismatched LM.
    """

    def __init__(self, tokenizer: Tokenizer, config: DecoderConfig) -> None:
        try:
            from pyctcdecode.alphabet import Alphabet, _verify_alphabet
            from pyctcdecode.decoder import BeamSearchDecoderCTC
        except ImportError as e:
            raise ConfigError(PYCTCDECODE_MISSING) from e
        self.tokenizer, self.config = tokenizer, config
        self.vocab = decoding_vocabulary(tokenizer)
        if self.vocab.pyctcdecode_labels is None:
            raise ConfigError(
                f"pyctcdecode cannot decode {type(tokenizer).__name__} models (their words exist "
                "only through a lexicon, which pyctcdecode lacks): use backend flashlight"
            )
        if config.lexicon:
            raise ConfigError("pyctcdecode searches without a lexicon: use backend flashlight")
        labels = list(self.vocab.pyctcdecode_labels)
        is_bpe = any(label.startswith(BPE_BOUNDARY) for label in labels)
        _verify_alphabet(labels, is_bpe)
        self.alphabet = Alphabet(labels, is_bpe)
        self.coverage: float | None = None
        language_model = None
        if config.lm:
            info = inspect_lm(config.lm, config.lm_order)
            check_unit(info, self.vocab.unit)
            if self.vocab.unit == "char":
                share = coverage(lm_characters(tokenizer), info.vocabulary)
                what = "model's characters"
            else:  # which LM words the model's tokens can write
                words = sorted(info.vocabulary)
                spellable = {w for w in words if spell(tokenizer, w) is not None}
                share = coverage(words, spellable)
                what = "LM words as the model's tokens spell them"
            self.coverage = check_coverage(share, what, info.path)
            order = info.order or config.lm_order
            if order is None:
                raise ConfigError(f"give lm_order for the KenLM binary {info.path}")
            language_model = kenlm_scorer(
                info.path, info.vocabulary, order, config.lm_weight, config.word_score
            )
        self._decoder = BeamSearchDecoderCTC(self.alphabet, language_model)

    def reweight(self, lm_weight: float, word_score: float) -> PyCTCDecoder:
        """This decoder with another LM weight (alpha) and word score (beta), in place: the LM
        stays loaded (`BeamSearchDecoderCTC.reset_params`)."""
        self.config = self.config.replace(lm_weight=lm_weight, word_score=word_score)
        self._decoder.reset_params(alpha=lm_weight, beta=word_score)
        return self

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """(B, T, V) log-probabilities and (B,) valid frames -> B transcripts."""
        c = self.config
        frames = torch.log_softmax(log_probs.detach().float(), dim=-1).cpu().numpy()
        texts = []
        for b, n in enumerate(lengths.cpu().tolist()):
            text = self._decoder.decode(
                frames[b, :n],
                beam_width=c.beam_size,
                beam_prune_logp=c.beam_prune_logp,
                token_min_logp=c.token_min_logp,
                hotwords=list(c.hotwords) or None,
                hotword_weight=c.hotword_weight,
            )
            texts.append(text.replace(" ", "") if self.vocab.joiner == "" else text)
        return texts
