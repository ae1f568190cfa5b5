"""Batch Dispatch (Deep Speech 2, section 7): the requests of many users are gathered into one
batched forward pass, so a server stays efficient under load.

Work items of several kinds (a stream's new audio, a stream's end) wait in one queue. One worker
thread runs the batched functions (work that arrives while a batch runs waits for the next one, so
batches form) and repeatedly takes the kind of the oldest pending item, gathers up to
`max_batch_size` items of that kind (waiting at most `max_wait` after the oldest arrived), and
runs that kind's batched function on them. Callers get a `concurrent.futures.Future` (asyncio:
`asyncio.wrap_future`).

A server may run several dispatchers over one model (inference only reads it): `ds2hub serve`
runs live streams on one and uploads on another, whose worker has the lowest CPU priority, so
that a long upload never holds the streams' worker and yields the CPU to it when contended.

Written by hand: no well-kept library implements this policy for arbitrary batched callables
(serving frameworks such as Triton or Ray Serve bring their own servers).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

BatchFunction = Callable[[list[Any]], Sequence[Any]]
# Called after every batch: (kind, batch size, seconds each item waited in the queue).
BatchObserver = Callable[[str, int, list[float]], None]


def lower_cpu_priority(nice: int) -> None:
    """Gives the calling thread the Unix nice value `nice` (19: CPU time nothing else wants).
    Linux only, where nice values are per thread (PRIO_PROCESS with a thread id) and threads it
    starts inherit them; elsewhere, or where a sandbox forbids it, it runs at normal priority."""
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as error:
        logger.warning("could not lower a worker thread's CPU priority: %s", error)


class QueueFull(RuntimeError):
    """The queue holds as many items of this kind as the server accepts (answer 503)."""


@dataclass
class _Item:
    kind: str
    payload: Any
    enqueued: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future)


class BatchDispatcher:
    """Runs batched functions over queued work items on one worker thread.

    Args:
        functions: kind -> function taking a list of payloads and returning one result per payload
            (an `Exception` instance as a result fails that item alone).
        max_batch_size: most items per call (1: no batching).
        max_wait: seconds the oldest item may wait for its batch to fill.
        limits: kind -> most items of that kind queued at once (`submit` raises `QueueFull`).
        observer: told about every batch (metrics).
        nice: the worker thread's CPU priority, a Unix nice value (19: run only on CPU time that
            nothing else wants); Linux only, where nice values are per thread; torch's intra-op
            threads that the worker starts inherit it.
    """

    def __init__(
        self,
        functions: dict[str, BatchFunction],
        max_batch_size: int = 16,
        max_wait: float = 0.01,
        limits: dict[str, int] | None = None,
        observer: BatchObserver | None = None,
        nice: int = 0,
    ) -> None:
        if max_batch_size < 1 or max_wait < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait >= 0")
        self.functions = dict(functions)
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.limits = dict(limits or {})
        self.observer = observer
        self.nice = nice
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(
            target=self._work, name="ds2hub-batch-dispatch", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stops the worker after the batch in progress; items still queued are cancelled."""
        with self._cond:
            self._running = False
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for item in left:
            item.future.cancel()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> BatchDispatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- callers --------------------------------------------------------------------------------
    def submit(self, kind: str, payload: Any) -> Future:
        """Queues one item; the future resolves to its result (cancel it to drop the item)."""
        if kind not in self.functions:
            raise KeyError(f"no batched function for {kind!r}")
        item = _Item(kind, payload)
        with self._cond:
            if not self._running:
                raise RuntimeError("the dispatcher is not running")
            limit = self.limits.get(kind)
            if limit is not None and sum(i.kind == kind for i in self._queue) >= limit:
                raise QueueFull(f"{limit} {kind} items are already waiting")
            self._queue.append(item)
            self._cond.notify()
        return item.future

    def pending(self, kind: str | None = None) -> int:
        with self._cond:
            return sum(kind is None or i.kind == kind for i in self._queue)

    # --- the worker -----------------------------------------------------------------------------
    def _next_batch(self) -> list[_Item] | None:
        """Blocks until a batch is due; None once stopped."""
        with self._cond:
            while self._running:
                due = self._due()
                if isinstance(due, list):
                    return due
                self._cond.wait(due)  # None: until an item arrives
            return None

    def _due(self) -> list[_Item] | float | None:
        """The batch to run now (taken off the queue), or how long to wait for one. A separate
        method so that nothing of the queue stays referenced while the worker waits (a cancelled
        stream's state must be freed at once)."""
        if any(i.future.cancelled() for i in self._queue):  # clients that left before their turn
            self._queue = deque(i for i in self._queue if not i.future.cancelled())
        if not self._queue:
            return None
        oldest = self._queue[0]
        same = [i for i in self._queue if i.kind == oldest.kind]
        wait = oldest.enqueued + self.max_wait - time.perf_counter()
        if len(same) < self.max_batch_size and wait > 0:
            return wait
        batch = same[: self.max_batch_size]
        taken = {id(i) for i in batch}
        self._queue = deque(i for i in self._queue if id(i) not in taken)
        return batch

    def _work(self) -> None:
        if self.nice:
            lower_cpu_priority(self.nice)
        while (batch := self._next_batch()) is not None:
            batch = [i for i in batch if i.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            kind = batch[0].kind
            start = time.perf_counter()
            if self.observer is not None:
                try:
                    self.observer(kind, len(batch), [start - i.enqueued for i in batch])
                except Exception:  # noqa: BLE001 - metrics must never stop the model thread
                    logger.exception("batch observer failed")
            self._run(kind, batch)
            del batch  # the payloads (a stream's state) must not outlive their batch

    def _run(self, kind: str, batch: list[_Item]) -> None:
        function = self.functions[kind]
        try:
            results = list(function([i.payload for i in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"{kind}: {len(results)} results for {len(batch)} items")
        except Exception as error:  # noqa: BLE001
            if len(batch) > 1:  # one bad item must not fail its batch mates: run each alone
                logger.warning(
                    "%s batch of %d failed (%s); retrying one by one", kind, len(batch), error
                )
                for item in batch:
                    self._run(kind, [item])
                return
            results = [error]
        for item, result in zip(batch, results):
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
