"""Prometheus metrics of one service instance (its own registry, so tests can run several)."""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    def __init__(self, queue_depths: Callable[[], dict[str, int]]):
        self.registry = CollectorRegistry()
        self.requests = Counter("patchcore_predict_requests", "Predict requests by model, status and decision",
                                ("model", "status", "decision"), registry=self.registry)
        self.latency = Histogram("patchcore_predict_latency_seconds", "Predict latency, upload read to answer",
                                 ("model",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("patchcore_batch_size", "Images per micro-batch", ("model",),
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        depth = Gauge("patchcore_queue_depth", "Images waiting for the network", ("model",), registry=self.registry)
        self._depth, self._queue_depths = depth, queue_depths

    def render(self) -> bytes:
        for model, value in self._queue_depths().items():
            self._depth.labels(model).set(value)
        return generate_latest(self.registry)
