"""Word sequences: new training utterances made by joining a corpus's own utterances.

A corpus of isolated words (FSDD's digits, one word a recording) lets a model read the whole
recording as one cue: where the word starts and ends, its speaker's level and colouring. Joined
two to four at a time, with a pause between them, the same recordings must be read word by word,
each at its own place in a longer utterance, beside words of the same or another speaker. On FSDD
it did not help (the README's FSDD notes give the runs), and `recipes/fsdd_digits.yaml` does not
use it.

The sequences are drawn once, when the training data is set up (seeded), from the corpus's own
training rows only: held-out groups are never among them, and `extra_train` corpora (synthetic
speech) are not joined. Each epoch augments them afresh, as any other utterance. No library joins
utterances of a Hugging Face dataset on the fly (Lhotse's `CutConcatenate` packs whole batches of
its own cut sets), so this is written here.

Transcripts are joined with the tokenizer's `word_joiner` (a space; nothing for Chinese). A
pinyin tokenizer then reads the joined characters as one text, so a polyphone at the boundary may
be read in its neighbour's context rather than as in its own recording.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from ds2hub.audio import SAMPLE_RATE, AudioDecodeError, load_audio
from ds2hub.errors import ConfigError
from ds2hub.training.data.dataset import SpeechDataset, audio_source, featurize

log = logging.getLogger(__name__)

# The pause between two words: noise this far below full scale, so it is not digital silence.
PAUSE_LEVEL_DB = -60.0
PEAK = 0.9  # each sequence's peak (full scale is 1)


@dataclass(frozen=True)
class SequenceConfig:
    """How many word sequences to add to the training data, and how to join them.

    Args:
        count: sequences added (0: none).
        words: the number of utterances joined, drawn uniformly from [low, high].
        pause_ms: the pause between two of them, drawn uniformly from this range.
        gain_db: each utterance is brought to the same peak, then lowered by up to this much.
        same_group_prob: the share of sequences whose utterances all come from one group of
            `holdout_column` (one speaker); the others draw from every group (so some of those
            are of one group too, by chance). Without a holdout column every sequence draws
            from the whole split.
    """

    count: int = 0
    words: tuple[int, int] = (2, 4)
    pause_ms: tuple[float, float] = (20.0, 250.0)
    gain_db: float = 6.0
    same_group_prob: float = 0.5

    def __post_init__(self) -> None:
        # Refused when the recipe is read, not in a loader worker halfway through training.
        if self.count < 0:
            raise ValueError(f"sequences.count must not be negative, not {self.count}")
        if not 1 <= self.words[0] <= self.words[1]:
            raise ValueError("sequences.words must be [low, high] with 1 <= low <= high")
        if not 0.0 <= self.pause_ms[0] <= self.pause_ms[1]:
            raise ValueError("sequences.pause_ms must be [low, high] with 0 <= low <= high")
        if self.gain_db < 0 or not 0.0 <= self.same_group_prob <= 1.0:
            raise ValueError(
                "sequences.gain_db must not be negative and sequences.same_group_prob must be "
                "in [0, 1]"
            )


@dataclass(frozen=True)
class WordSequence:
    """One sequence: the rows it joins, the pause before each row but the first, their gains."""

    rows: tuple[int, ...]
    pauses: tuple[float, ...]  # seconds, len(rows) - 1
    gains_db: tuple[float, ...]  # len(rows)

    def duration(self, durations: Sequence[float]) -> float:
        return sum(durations[i] for i in self.rows) + sum(self.pauses)


def plan_sequences(
    groups: Sequence[str | None],
    durations: Sequence[float],
    config: SequenceConfig,
    max_duration: float,
    seed: int,
) -> list[WordSequence]:
    """Draws `config.count` sequences of the rows whose group is not None.

    Args:
        groups: each training row's group (its speaker), or None for a row that must not be
            joined (an `extra_train` corpus).
        durations: each row's seconds.
        config: how many, and how.
        max_duration: no sequence is longer (utterances are left out until it fits).
        seed: the same seed draws the same sequences.
    """
    rng = random.Random(seed)
    sources = [i for i, g in enumerate(groups) if g is not None]
    if config.count and not sources:
        raise ConfigError(
            "data.sequences: the training split has no usable rows of its own to join (only "
            "extra_train corpora); set data.sequences.count: 0"
        )
    by_group: dict[str, list[int]] = {}
    for i in sources:
        by_group.setdefault(str(groups[i]), []).append(i)
    names = sorted(by_group)
    plans = []
    for _ in range(config.count):
        k = rng.randint(*config.words)
        pool = by_group[rng.choice(names)] if rng.random() < config.same_group_prob else sources
        rows = [rng.choice(pool) for _ in range(k)]
        pauses = [rng.uniform(*config.pause_ms) / 1000 for _ in range(k - 1)]
        gains = [-rng.uniform(0.0, config.gain_db) for _ in range(k)]
        plan = WordSequence(tuple(rows), tuple(pauses), tuple(gains))
        while len(plan.rows) > 1 and plan.duration(durations) > max_duration:
            plan = WordSequence(plan.rows[:-1], plan.pauses[:-1], plan.gains_db[:-1])
        plans.append(plan)
    return plans


def join_words(waves: Sequence[torch.Tensor], plan: WordSequence) -> torch.Tensor:
    """The waveform of a sequence: each word at the same peak less its gain, pauses of quiet
    noise between them, the whole at `PEAK`."""
    parts = []
    for j, (wave, gain) in enumerate(zip(waves, plan.gains_db)):
        if j:
            pause = torch.randn(round(plan.pauses[j - 1] * SAMPLE_RATE))
            parts.append(pause * 10 ** (PAUSE_LEVEL_DB / 20))
        parts.append(wave / wave.abs().max().clamp_min(1e-9) * 10 ** (gain / 20))
    joined = torch.cat(parts)
    return joined * (PEAK / joined.abs().max().clamp_min(1e-9))


class SequencedDataset(Dataset):
    """A training `SpeechDataset` and its word sequences after it: items `len(base)` and on are
    the sequences (same item layout, augmented and featurised alike)."""

    def __init__(self, base: SpeechDataset, plans: Sequence[WordSequence], joiner: str) -> None:
        self.base, self.plans, self.joiner = base, list(plans), joiner
        self.durations = list(base.durations) + [p.duration(base.durations) for p in plans]

    @property
    def data(self):
        """The base dataset's rows (a Hugging Face dataset), as `SpeechDataset.data`."""
        return self.base.data

    @property
    def audio_column(self) -> str:
        return self.base.audio_column

    def __len__(self) -> int:
        return len(self.base) + len(self.plans)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        index = int(index)
        if index < len(self.base):
            return self.base[index]
        plan, base = self.plans[index - len(self.base)], self.base
        rows = [base.data[i] for i in plan.rows]
        try:
            waves = [load_audio(audio_source(row[base.audio_column])) for row in rows]
        except AudioDecodeError as error:
            log.warning("skipping word sequence %d: %s", index, error)
            return None
        text = self.joiner.join(row[base.text_column] for row in rows)
        return featurize(join_words(waves, plan), text, index, base)


__all__ = ["SequenceConfig", "SequencedDataset", "WordSequence", "join_words", "plan_sequences"]
