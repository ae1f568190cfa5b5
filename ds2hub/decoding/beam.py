"""CTC beam search over a word lexicon, scored by a word n-gram language model, as the paper decodes.

The search is torchaudio's `ctc_decoder` (flashlight's lexicon decoder with KenLM): hypotheses
may only spell words of the lexicon, and each finished word adds `lm_weight * log P(word | history)`
plus `word_score`. What ds2hub adds is the glue: the lexicon and LM files written from a
tokenizer's word list, and token names flashlight can read.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ds2hub.tokenizers.base import BLANK, LexiconEntry, Tokenizer, read_word_counts

SIL = "|"  # flashlight's word-boundary token; ds2hub's space token is renamed to it
LABEL_SEPARATOR = "/"  # a lexicon label is `text/reading`, so homographs get their own LM entry


@dataclass(frozen=True)
class BeamSearchConfig:
    """Beam search settings (recipe: `model.beam_search`)."""

    beam_size: int = 50  # hypotheses kept per frame
    beam_size_token: int | None = None  # tokens tried per frame (None: all)
    beam_threshold: float = 25.0  # drop hypotheses this far below the best
    lm_weight: float = 1.0  # weight of the LM's natural-log probability
    word_score: float = 0.0  # added per word (positive: longer outputs)
    sil_score: float = 0.0  # added per word boundary token
    lexicon: str | None = None  # word list (`word [count]` lines); None: the tokenizer's own
    lm: str | None = None  # KenLM model (ARPA or binary) over the words; None: unigram of counts

    def to_dict(self) -> dict:
        return asdict(self)


def read_word_list(path: str | Path, tokenizer: Tokenizer) -> list[LexiconEntry]:
    """`word [count]` lines -> lexicon entries spelled by `tokenizer`, priors from the counts."""
    counts = read_word_counts(path)
    total = sum(counts.values())
    return [
        LexiconEntry(word, tokenizer.spell(word), math.log10(count / total))
        for word, count in counts.items()
    ]


def write_unigram_arpa(entries: Sequence[LexiconEntry], path: Path) -> None:
    """A unigram LM over the entries' labels, as an ARPA file KenLM reads directly.

    KenLM only loads models of order two or more, so the file declares one bigram (`<s> </s>`,
    the empty sentence, made impossible); every other bigram backs off to the unigrams.
    """
    labels = {_label(e): e.log10_prob for e in entries}
    lines = ["\\data\\", f"ngram 1={len(labels) + 3}", "ngram 2=1", "", "\\1-grams:"]
    lines += ["-99\t<s>\t0", "0\t</s>", "-99\t<unk>\t0"]  # every hypothesis pays the same end
    lines += [f"{p:.6f}\t{label}\t0" for label, p in labels.items()]
    lines += ["", "\\2-grams:", "-99\t<s> </s>", "", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _label(entry: LexiconEntry) -> str:
    return f"{entry.text}{LABEL_SEPARATOR}{entry.reading}" if entry.reading else entry.text


class LexiconBeamSearch:
    """Logits -> text, searching only spellings of lexicon words, ranked with an n-gram LM.

    Args:
        tokenizer: the model's output vocabulary (id 0 blank; a space token marks word or
            syllable boundaries and is renamed `|` for flashlight).
        entries: the lexicon (default: `config.lexicon`'s words, else
            `tokenizer.lexicon_entries()`); spellings use the tokenizer's token strings.
        config: beam settings.
        lm: a KenLM model (ARPA or binary) over the entries' labels (default: `config.lm`);
            None writes a unigram LM from the entries' priors.
        joiner: put between output words (default: the tokenizer's `word_joiner`).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        entries: Iterable[LexiconEntry] | None = None,
        config: BeamSearchConfig | None = None,
        lm: str | Path | None = None,
        joiner: str | None = None,
    ) -> None:
        from torchaudio.models.decoder import ctc_decoder  # needs flashlight-text

        self.config = config or BeamSearchConfig()
        self.joiner = tokenizer.word_joiner if joiner is None else joiner
        if " " not in tokenizer.vocab:
            raise ValueError(f"LexiconBeamSearch needs a space token; {tokenizer!r} has none")
        if entries is None:
            lexicon_file = self.config.lexicon
            entries = (
                read_word_list(lexicon_file, tokenizer)
                if lexicon_file
                else tokenizer.lexicon_entries()
            )
        lm = lm or self.config.lm
        tokens = ["-" if t == BLANK else _flashlight(t) for t in tokenizer.vocab]
        known = set(tokens)
        entries = [e for e in entries if e.spelling and set(map(_flashlight, e.spelling)) <= known]
        if not entries:
            raise ValueError("LexiconBeamSearch: no lexicon word can be spelled with these tokens")
        # flashlight reads the lexicon (and the LM) from files; they live only while it loads.
        with tempfile.TemporaryDirectory(prefix="ds2hub-lexicon-") as tmp:
            lexicon = Path(tmp) / "lexicon.txt"
            lexicon.write_text(
                "".join(
                    f"{_label(e)}\t{' '.join(map(_flashlight, e.spelling))}\n" for e in entries
                ),
                encoding="utf-8",
            )
            if lm is None:
                lm = Path(tmp) / "unigram.arpa"
                write_unigram_arpa(entries, lm)
            c = self.config
            self._decoder = ctc_decoder(
                lexicon=str(lexicon),
                tokens=tokens,
                lm=str(lm),
                beam_size=c.beam_size,
                beam_size_token=c.beam_size_token,
                beam_threshold=c.beam_threshold,
                lm_weight=c.lm_weight,
                word_score=c.word_score,
                sil_score=c.sil_score,
                blank_token="-",
                sil_token=SIL,
                unk_word="<unk>",
            )

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """(B, T, V) logits and (B,) valid frames -> B transcripts."""
        log_probs = torch.log_softmax(logits.detach().float(), dim=-1).cpu().contiguous()
        hyps = self._decoder(log_probs, lengths.cpu().to(torch.int32))
        return [self._text(h[0].words) if h else "" for h in hyps]

    def _text(self, labels: Sequence[str]) -> str:
        return self.joiner.join(w.split(LABEL_SEPARATOR, 1)[0] for w in labels)


def _flashlight(token: str) -> str:
    return SIL if token == " " else token
