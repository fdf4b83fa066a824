"""Prometheus metrics for GET /metrics: answers by model and status, latency, and batching.

Optional: without prometheus_client (Debian's python3-prometheus-client) the service runs
without /metrics.
"""
from __future__ import annotations

from typing import Iterator, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .registry import ModelRegistry

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _BatchingCollector:
    """Reads every Predictor's stats() at scrape time, so the numbers are never stale."""

    def __init__(self, models: ModelRegistry) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("tlcore_predictor_requests", "Images the predictor accepted", labels=["model"])
        rejected = CounterMetricFamily("tlcore_predictor_rejected", "Images refused on a full queue",
                                       labels=["model"])
        batches = CounterMetricFamily("tlcore_predictor_batches", "Batches run, by batch size",
                                      labels=["model", "size"])
        queue = GaugeMetricFamily("tlcore_predictor_queue_depth", "Images waiting for a batch", labels=["model"])
        for name, served in list(self.models.models.items()):
            stats = served.predictor.stats()
            requests.add_metric([name], stats["requests"])
            rejected.add_metric([name], stats["rejected"])
            queue.add_metric([name], stats["queue_depth"])
            for size, count in stats["batch_sizes"].items():
                batches.add_metric([name, str(size)], count)
        yield from (requests, rejected, batches, queue)


class Metrics:
    """One app's metrics, in a registry of its own (several apps may share a process)."""

    def __init__(self, models: ModelRegistry) -> None:
        self.registry = CollectorRegistry()
        self.answers = Counter("tlcore_http_predictions", "Prediction requests answered, by model and status",
                               ["model", "status"], registry=self.registry)
        self.latency = Histogram("tlcore_http_prediction_seconds", "Time to answer a prediction request",
                                 ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_BatchingCollector(models))

    def observe(self, model: str, status: int, seconds: float) -> None:
        self.answers.labels(model, str(status)).inc()
        self.latency.labels(model).observe(seconds)

    def render(self) -> Tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
