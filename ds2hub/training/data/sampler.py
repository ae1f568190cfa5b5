"""Batching the paper's way: SortaGrad (Deep Speech 2, section 3.1: the first epoch in increasing
order of length, which stabilises early CTC training) and batches filled up to a budget of *padded*
seconds (longest utterance x batch size), with length bucketing so little compute goes to padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import torch
from torch.utils.data import Sampler

from ds2hub.errors import ConfigError

T = TypeVar("T")


def pack_greedy(
    items: Iterable[T], seconds: Callable[[T], float], max_batch_seconds: float, max_batch_size: int
) -> Iterator[list[T]]:
    """Cuts `items`, in their order, into batches of at most `max_batch_size` whose padded duration
    (longest x count) stays within `max_batch_seconds`; one longer than the budget goes alone.
    The one packing rule of ds2hub, for index lists and streamed utterances alike."""
    batch: list[T] = []
    longest = 0.0
    for item in items:
        d = seconds(item)
        if batch and (
            max(longest, d) * (len(batch) + 1) > max_batch_seconds or len(batch) >= max_batch_size
        ):
            yield batch
            batch, longest = [], 0.0
        batch.append(item)
        longest = max(longest, d)
    if batch:
        yield batch


class DurationBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices whose padded duration stays within `max_batch_seconds`.

    Args:
        durations: seconds per utterance (index-aligned with the dataset).
        max_batch_seconds: budget of padded audio per batch (longest x count), per device.
        max_batch_size: cap on utterances per batch.
        bucketing: group utterances of similar length (otherwise batches are random subsets).
        sortagrad: epoch 0 visits batches shortest-first.
        shuffle: shuffle batch order (and, with bucketing, jitter bucket boundaries) each epoch.
        num_replicas / rank: DDP sharding; every rank gets different batches.
        pad: repeat a few batches so every rank gets as many (under DDP a rank that runs out
            would wait forever in the all-reduce); off for evaluation, which counts each once.
        seed: common to all ranks, so they agree on the epoch's batches.
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_batch_seconds: float,
        max_batch_size: int = 256,
        bucketing: bool = True,
        sortagrad: bool = True,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        pad: bool = True,
    ) -> None:
        if max_batch_seconds < max(durations, default=0):
            raise ConfigError(
                f"max_batch_seconds={max_batch_seconds} is shorter than the longest utterance "
                f"({max(durations):.1f} s); raise it or lower max_duration"
            )
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.durations = torch.as_tensor(durations, dtype=torch.float64)
        self.max_batch_seconds, self.max_batch_size = max_batch_seconds, max_batch_size
        self.bucketing, self.sortagrad, self.shuffle = bucketing, sortagrad, shuffle
        self.num_replicas, self.rank, self.seed, self.pad = num_replicas, rank, seed, pad
        self.epoch = 0
        self._skip = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch the next iteration yields (SortaGrad in epoch 0, then new shuffles)."""
        self.epoch = epoch

    def skip_batches(self, count: int) -> None:
        """Makes the next iteration start after this rank's first `count` batches (a resume)."""
        self._skip = count

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of an epoch, across ranks, in visiting order."""
        epoch = self.epoch if epoch is None else epoch
        # Lightning asks for len() many times an epoch; sorting and packing is the costly part.
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._make_batches(epoch))
        return self._cache[1]

    def _make_batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        n = len(self.durations)
        sorted_epoch = self.sortagrad and epoch == 0
        if self.bucketing or sorted_epoch:
            key = self.durations.clone()
            if self.shuffle and not sorted_epoch:  # vary bucket edges
                key *= 1 + 0.1 * (torch.rand(n, generator=g, dtype=torch.float64) - 0.5)
            order = torch.argsort(key, stable=True).tolist()
        else:
            order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        durations = self.durations.tolist()  # Python floats: indexing a tensor per item is slow
        budget, most = self.max_batch_seconds, self.max_batch_size
        batches = list(pack_greedy(order, durations.__getitem__, budget, most))
        if self.shuffle and not sorted_epoch:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        if not self.pad:
            # Evaluation: no repeats, but every rank needs at least one batch (Lightning refuses
            # an empty loader): split the largest batches until there are enough.
            while len(batches) < self.num_replicas and any(len(b) > 1 for b in batches):
                largest = max(range(len(batches)), key=lambda i: len(batches[i]))
                big = batches.pop(largest)
                batches[largest:largest] = [big[: len(big) // 2], big[len(big) // 2 :]]
            return batches
        # Equal batch counts on every rank (DDP would hang otherwise): repeat a few batches.
        total = math.ceil(len(batches) / self.num_replicas) * self.num_replicas
        return batches + batches[: total - len(batches)]

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        yield from self.batches()[self.rank :: self.num_replicas][skip:]

    def __len__(self) -> int:
        return len(self.batches()[self.rank :: self.num_replicas])

    def padding_fraction(self, epoch: int | None = None) -> float:
        """Share of the padded batch tensors that is padding (over all ranks' batches)."""
        real = padded = 0.0
        for batch in self.batches(epoch):
            d = self.durations[batch]
            real += float(d.sum())
            padded += float(d.max()) * len(batch)
        return 1.0 - real / padded if padded else 0.0
