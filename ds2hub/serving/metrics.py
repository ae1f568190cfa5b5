"""Prometheus metrics of `ds2hub serve`: batch sizes, queue time, latency and load.

Histograms are what Prometheus aggregates (`histogram_quantile`); the latency percentiles of the
most recent requests are also exported directly, as a summary with `quantile` labels, so that one
scrape of `/metrics` answers "what is p99 now" without a Prometheus server.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import Metric

QUANTILES = (0.5, 0.95, 0.99)
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _RecentQuantiles:
    """Percentiles over the last `window` observations per label (a custom collector)."""

    def __init__(self, name: str, documentation: str, window: int = 2000) -> None:
        self.name, self.documentation = name, documentation
        self._values: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self._lock = threading.Lock()

    def observe(self, kind: str, value: float) -> None:
        with self._lock:
            self._values[kind].append(value)

    def collect(self):
        metric = Metric(self.name, self.documentation, "summary")
        with self._lock:
            recent = {
                kind: np.array(values, dtype=np.float64) for kind, values in self._values.items()
            }
        for kind, values in recent.items():
            for q in QUANTILES:  # `observe` made the kind: it has a value
                value = float(np.quantile(values, q))
                metric.add_sample(self.name, {"kind": kind, "quantile": str(q)}, value)
            metric.add_sample(self.name + "_count", {"kind": kind}, values.size)
            metric.add_sample(self.name + "_sum", {"kind": kind}, float(values.sum()))
        yield metric


class ServerMetrics:
    """All metrics of one server, in their own registry (several servers may share a process)."""

    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        by_kind = {"labelnames": ["kind"], "registry": self.registry}
        sizes = sorted({1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, max_batch_size})
        self.batch_size = Histogram(
            "ds2hub_batch_size",
            "Work items per batched forward pass",
            buckets=[s for s in sizes if s <= max_batch_size],
            **by_kind,
        )
        self.items = Counter("ds2hub_items", "Work items run", **by_kind)
        self.batched_items = Counter(
            "ds2hub_batched_items", "Work items run in batches of two or more", **by_kind
        )
        timing = {**by_kind, "buckets": _SECONDS}
        self.queue_seconds = Histogram(
            "ds2hub_queue_seconds", "Time a work item waited for its batch", **timing
        )
        self.latency_seconds = Histogram(
            "ds2hub_latency_seconds",
            "Stream chunk arrival to its partial result, or file request to its transcript",
            **timing,
        )
        self.recent_latency = _RecentQuantiles(
            "ds2hub_recent_latency_seconds", "Latency percentiles of the last 2000 results"
        )
        self.registry.register(self.recent_latency)
        self.live_streams = Gauge(
            "ds2hub_live_streams", "Open streaming connections", registry=self.registry
        )
        self.rejected = Counter(
            "ds2hub_rejected",
            "Requests refused or closed with an error",
            ["reason"],
            registry=self.registry,
        )

    def observe_batch(self, kind: str, size: int, waited: list[float]) -> None:
        """The dispatcher's observer."""
        self.batch_size.labels(kind).observe(size)
        self.items.labels(kind).inc(size)
        if size >= 2:
            self.batched_items.labels(kind).inc(size)
        for seconds in waited:
            self.queue_seconds.labels(kind).observe(seconds)

    def observe_latency(self, kind: str, seconds: float) -> None:
        self.latency_seconds.labels(kind).observe(seconds)
        self.recent_latency.observe(kind, seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
