"""The flashlight backend: flashlight-text's CTC beam search with KenLM, through its own bindings.

Word LMs: a lexicon search, hypotheses only spell lexicon words (`lexicon_entries`) and each
finished word adds α log P(word | history) + β. Character LMs: a lexicon-free search scoring
every token as it is emitted (β does not apply: flashlight has no per-word score there).
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from functools import cache
from pathlib import Path

import torch

from ds2hub.decoding.config import DecoderConfig
from ds2hub.decoding.hanzi import pinyin_lexicon, word_counts
from ds2hub.decoding.lexicon import (
    LexiconEntry,
    read_word_counts,
    unigram_priors,
    write_lexicon,
    write_unigram_arpa,
)
from ds2hub.decoding.lm import LMInfo, check_coverage, check_unit, coverage, inspect_lm
from ds2hub.decoding.vocabulary import SIL, decoding_vocabulary, lm_characters, spell
from ds2hub.errors import ConfigError
from ds2hub.tokenizers.base import BLANK, Tokenizer
from ds2hub.tokenizers.pinyin import LETTERS, PinyinTokenizer

log = logging.getLogger(__name__)
TRIE_MAX_LABELS = 6  # flashlight's kTrieMaxLabel: words stored per spelling
NEVER = -1e9  # log-probability of the added boundary column: flashlight needs the token to exist


def lexicon_entries(
    tokenizer: Tokenizer, config: DecoderConfig, lm: LMInfo | None
) -> list[LexiconEntry]:
    """The words a lexicon search may write, spelled in flashlight's token names.

    Raises:
        ConfigError: no word can be spelled, or there is neither a lexicon nor an LM to take
            words from.
    """
    if isinstance(tokenizer, PinyinTokenizer):  # words are Han words, spelled by their readings
        if tokenizer.output != "hanzi":
            raise ConfigError("a pinyin model with output='pinyin' has no word lexicon to search")
        path = config.lexicon or tokenizer.lexicon_path
        return list(_pinyin_entries(path, 1 if config.lexicon else tokenizer.lexicon_min_count))
    if config.lexicon:
        counts = read_word_counts(config.lexicon)
    elif lm is not None:
        counts = dict.fromkeys(lm.vocabulary, 1.0)
    else:
        raise ConfigError(
            f"lexicon beam search for a {type(tokenizer).__name__} model needs an LM (lm=) or a "
            "word list (lexicon=)"
        )
    priors = unigram_priors(counts)
    spellings = {word: spell(tokenizer, word) for word in sorted(counts)}
    entries = [LexiconEntry(w, s, priors[w]) for w, s in spellings.items() if s is not None]
    if not entries:
        raise ConfigError(
            f"no word of the {'lexicon' if config.lexicon else 'LM'} can be spelled with the "
            f"model's {type(tokenizer).__name__} tokens"
        )
    share = len(entries) / len(counts)
    level = logging.WARNING if share < 0.5 else logging.INFO
    log.log(
        level,
        "%d of %d words (%.1f %%) spelled with the model's tokens",
        len(entries),
        len(counts),
        100 * share,
    )
    return entries


@cache
def _pinyin_entries(path: str | None, min_count: int) -> tuple[LexiconEntry, ...]:
    # Cached per process: reading every word of jieba's dictionary takes seconds, and tuning
    # builds one decoder per (alpha, beta).
    allowed = set(LETTERS) - {" "} | {SIL}
    words = pinyin_lexicon(word_counts(path, min_count))
    spelled = [(w, tuple(SIL if t == " " else t for t in w.spelling)) for w in words]
    # left out: a reading pypinyin writes outside a-z, 1-5
    return tuple(LexiconEntry(w.word, s, w.log10_prob) for w, s in spelled if set(s) <= allowed)


def keep_per_spelling(
    entries: list[LexiconEntry], limit: int = TRIE_MAX_LABELS
) -> list[LexiconEntry]:
    """At most `limit` words per spelling, the likeliest by their word-list prior: flashlight's
    trie keeps 6 per spelling (`kTrieMaxLabel`) in file order, and `shi4` has dozens."""
    by_spelling: dict[tuple[str, ...], list[LexiconEntry]] = {}
    for e in entries:
        by_spelling.setdefault(e.spelling, []).append(e)
    kept = [e for g in by_spelling.values() for e in sorted(g, key=lambda e: -e.log10_prob)[:limit]]
    if len(kept) < len(entries):
        log.info(
            "flashlight keeps %d words per spelling: %d of %d lexicon entries left out "
            "(the least frequent homophones)",
            limit,
            len(entries) - len(kept),
            len(entries),
        )
    return kept


class FlashlightDecoder:
    """(B, T, V) log-probs, (B,) lengths -> B texts, with flashlight's beam search.

    Args:
        tokenizer: the model's output vocabulary.
        config: the settings (`backend` is not read here).
    Raises:
        ConfigError: a missing, corrupt or mismatched LM or lexicon (see `ds2hub.decoding.lm`).
    """

    def __init__(self, tokenizer: Tokenizer, config: DecoderConfig) -> None:
        if config.hotwords:
            raise ConfigError("the flashlight backend has no hotwords; use backend pyctcdecode")
        self.tokenizer, self.config = tokenizer, config
        self.vocab = decoding_vocabulary(tokenizer)
        info = inspect_lm(config.lm, config.lm_order) if config.lm else None
        if info is not None:
            check_unit(info, self.vocab.unit)
        self.coverage: float | None = None
        with tempfile.TemporaryDirectory(prefix="ds2hub-decoder-") as tmp:
            lexicon_file = lm_dict = None
            lm_file = str(info.path) if info else None
            if self.vocab.unit == "char":
                if info is None:
                    raise ConfigError(
                        "a character model decodes with a character LM: pass lm= (build one "
                        "with `ds2hub lm build --unit char`)"
                    )
                units, what = lm_characters(tokenizer), "model's characters"
                # The lexicon-free search asks the LM about token ids: its dictionary must list
                # the tokens in id order.
                lm_dict = str(Path(tmp, "lm_tokens.txt"))
                Path(lm_dict).write_text(
                    "".join(f"{t}\n" for t in self.vocab.flashlight_tokens), encoding="utf-8"
                )
            else:
                entries = keep_per_spelling(lexicon_entries(tokenizer, config, info))
                units, what = {e.text for e in entries}, "lexicon words"
                lexicon_file = str(Path(tmp, "lexicon.txt"))
                write_lexicon(entries, Path(lexicon_file))
                if lm_file is None:  # a unigram LM from the word list's counts
                    lm_file = str(Path(tmp, "unigram.arpa"))
                    priors: dict[str, float] = {}
                    for e in entries:
                        priors[e.text] = max(priors.get(e.text, -99.0), e.log10_prob)
                    write_unigram_arpa(priors, Path(lm_file))
            if info is not None:
                self.coverage = check_coverage(coverage(units, info.vocabulary), what, info.path)
            self._search = _Search(
                list(self.vocab.flashlight_tokens), lexicon_file, lm_file, lm_dict, config
            )

    def reweight(self, lm_weight: float, word_score: float) -> FlashlightDecoder:
        """This decoder with another LM weight (alpha) and word score (beta), in place: the LM,
        lexicon and trie stay loaded."""
        self.config = self.config.replace(lm_weight=lm_weight, word_score=word_score)
        self._search.configure(self.config)
        return self

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """(B, T, V) log-probabilities and (B,) valid frames -> B transcripts."""
        # log_softmax: idempotent on log-probabilities, and makes raw logits safe too
        emissions = torch.log_softmax(log_probs.detach().float(), dim=-1).cpu()
        if self.vocab.extra_sil:  # (B, T, V + 1): the boundary column, never emitted
            never = emissions.new_full((*emissions.shape[:2], 1), NEVER)
            emissions = torch.cat([emissions, never], dim=-1)
        return [
            self._text(*best) if best else ""
            for best in self._search(emissions.contiguous(), lengths.cpu())
        ]

    def _text(self, tokens: list[int], words: list[str]) -> str:
        if self.vocab.unit == "char":
            n = self.tokenizer.vocab_size
            ids = [i for i in _collapse(tokens, self._search.blank) if 0 < i < n]
            return self.tokenizer.decode(ids)
        return self.vocab.joiner.join(words)


def _collapse(tokens: list[int], blank: int) -> list[int]:
    """A CTC path's labels: repeats merged, then blanks dropped."""
    return [t for t, _ in itertools.groupby(tokens) if t != blank]


class _Search:
    """flashlight-text's lexicon (word LM) or lexicon-free (character LM) CTC beam search: a trie
    of the lexicon's spellings smeared with each word's unigram score, unknown words never emitted,
    silence free, the max (not log-add) of merged hypotheses, every token considered per frame
    (the set-up of torchaudio's `ctc_decoder`, which wrapped the same bindings).

    Args:
        tokens: flashlight's token names in id order (blank and silence among them).
        lexicon: a lexicon file (word, then its tokens, per line), or None for the lexicon-free
            search.
        lm: an ARPA or KenLM binary file, or None (no LM: `ZeroLM`).
        lm_dict: the lexicon-free search's LM dictionary file (one token per line, id order).
        config: beam size, threshold and the LM's weight and word score.
    """

    def __init__(
        self,
        tokens: list[str],
        lexicon: str | None,
        lm: str | None,
        lm_dict: str | None,
        config: DecoderConfig,
    ) -> None:
        from flashlight.lib.text import decoder as fl
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary, create_word_dict, load_words

        token_dict = Dictionary(tokens)
        self.blank, silence = token_dict.get_index(BLANK), token_dict.get_index(SIL)
        words = load_words(lexicon) if lexicon else None
        if lm_dict is not None:
            word_dict = Dictionary(lm_dict)
        elif words is not None:
            word_dict = create_word_dict(words)
        else:
            word_dict = None
        # The LM must outlive the decoder, which holds it by reference only (pybind11): kept here.
        self.lm = KenLM(lm, word_dict) if lm else fl.ZeroLM()
        self.silence, self.token_count = silence, token_dict.index_size()
        self.trie = None
        self.word_dict = None
        if words is not None:
            trie = fl.Trie(token_dict.index_size(), silence)
            start = self.lm.start(False)
            for word, spellings in words.items():
                index = word_dict.get_index(word)
                _, score = self.lm.score(start, index)
                for spelling in spellings:
                    trie.insert([token_dict.get_index(t) for t in spelling], index, score)
            trie.smear(fl.SmearingMode.MAX)
            self.trie, self.word_dict = trie, word_dict
            self.unknown = word_dict.get_index("<unk>")
        self.configure(config)

    def configure(self, config: DecoderConfig) -> None:
        """(Re)builds the search with `config`'s beam and weights, on the LM and trie already
        loaded: `ds2hub lm tune` tries dozens of weights on one LM."""
        from flashlight.lib.text import decoder as fl

        common = {
            "beam_size": config.beam_size,
            "beam_size_token": self.token_count,
            "beam_threshold": config.beam_threshold,
            "lm_weight": config.lm_weight,
            "sil_score": 0.0,
            "log_add": False,
            "criterion_type": fl.CriterionType.CTC,
        }
        if self.trie is None:
            options = fl.LexiconFreeDecoderOptions(**common)
            self.decoder = fl.LexiconFreeDecoder(options, self.lm, self.silence, self.blank, [])
            return
        options = fl.LexiconDecoderOptions(
            **common, word_score=config.word_score, unk_score=float("-inf")
        )
        self.decoder = fl.LexiconDecoder(
            options, self.trie, self.lm, self.silence, self.blank, self.unknown, [], False
        )

    def __call__(
        self, emissions: torch.Tensor, lengths: torch.Tensor
    ) -> list[tuple[list[int], list[str]] | None]:
        """(B, T, N) contiguous float32 CPU log-probabilities, (B,) valid frames -> per utterance
        the best hypothesis's frame-level tokens and its words (None: no hypothesis)."""
        batch, _, n = emissions.shape
        results = []
        for b in range(batch):
            pointer = emissions.data_ptr() + emissions.element_size() * b * emissions.stride(0)
            hyps = self.decoder.decode(pointer, int(lengths[b]), n)
            if not hyps:
                results.append(None)
                continue
            words = (
                [self.word_dict.get_entry(w) for w in hyps[0].words if w >= 0]
                if self.word_dict is not None
                else []
            )
            results.append((list(hyps[0].tokens), words))
        return results
