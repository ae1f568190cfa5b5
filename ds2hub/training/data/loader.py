"""`EpochLoader`: a DataLoader whose batch order follows the Trainer's epoch and survives a restart.

- **The epoch.** SortaGrad sorts epoch 0 and shuffles the others, but Lightning 2.6 calls
  `set_epoch` only on `dataloader.sampler` and `dataloader.batch_sampler.sampler`, never on a batch
  sampler itself or an iterable dataset: the loader asks `epoch_fn` and hands the epoch on.
- **Each epoch's length.** A padded-seconds budget packs a different number of batches each
  epoch: `len()` answers for the epoch about to run (`SpeechDataModule` reloads it every epoch).
- **Mid-epoch resume.** Lightning saves every train loader's `state_dict()` in the checkpoint and
  gives it back through `load_state_dict()`: the epoch and the batches delivered in it, which the
  next iteration skips, so a killed run neither repeats nor skips any. Lightning fetches one batch
  ahead from a loader without a length (a stream): `lookahead` corrects the count for that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from torch.utils.data import DataLoader


class EpochOrder(Protocol):
    """What decides an epoch's batches: `DurationBatchSampler`, or a streamed dataset."""

    def set_epoch(self, epoch: int) -> None: ...

    def skip_batches(self, count: int) -> None: ...


class EpochLoader(DataLoader):
    """A DataLoader that sets the epoch on its `order` and records its position for checkpoints.

    Args:
        dataset: map-style (with a `batch_sampler` in `kwargs`) or iterable.
        order: what decides the epoch's batches: the batch sampler, or the iterable dataset.
        epoch_fn: the epoch about to be iterated; None keeps the order's own epoch.
        lookahead: batches Lightning fetches ahead (1 for loaders without a length, else 0).
        **kwargs: passed to `DataLoader`.
    """

    def __init__(
        self,
        dataset: Any,
        order: EpochOrder,
        epoch_fn: Callable[[], int] | None = None,
        lookahead: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, **kwargs)
        self.order, self.epoch_fn, self.lookahead = order, epoch_fn, lookahead
        self.epoch = 0
        self.delivered = 0  # batches handed out in `self.epoch`
        self._exhausted = False  # the epoch ran to its end (nothing is fetched ahead any more)
        self._resume: tuple[int, int] | None = None

    def _sync_epoch(self) -> None:
        if self.epoch_fn is not None:
            self.order.set_epoch(self.epoch_fn())

    def __len__(self) -> int:
        self._sync_epoch()  # Lightning asks before the epoch starts: answer for that epoch
        return super().__len__()

    def __iter__(self) -> Iterator[Any]:
        # Set the epoch before the base class builds its iterator: worker processes start
        # fetching indices from the batch sampler as soon as it exists.
        self._sync_epoch()
        self.epoch = getattr(self.order, "epoch", self.epoch_fn() if self.epoch_fn else 0)
        self.delivered, self._exhausted = 0, False
        if self._resume is not None:
            epoch, done = self._resume
            self._resume = None
            if epoch == self.epoch and done > 0:
                self.order.skip_batches(done)
                self.delivered = done
        for batch in super().__iter__():
            self.delivered += 1
            yield batch
        self._exhausted = True

    def state_dict(self) -> dict[str, int]:
        """The epoch and how many of its batches the training loop has taken."""
        ahead = 0 if self._exhausted else self.lookahead
        return {"epoch": self.epoch, "batches": max(0, self.delivered - ahead)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration of `state['epoch']` starts after `state['batches']`."""
        self._resume = (int(state["epoch"]), int(state["batches"]))
