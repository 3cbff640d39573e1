"""Prometheus metrics of one gateway (its own registry, so several apps can live in one process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..routing import RoutedResult

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    """Requests, latency, batch sizes, and per-strategy generations and FLOPs, per-bin routing decisions."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tts_requests_total", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.latency = Histogram("tts_request_seconds", "request latency (seconds)", ["endpoint"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("tts_batch_size", "questions per batched search",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.search_seconds = Histogram("tts_search_seconds", "wall seconds of one batched search",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.generations = Counter("tts_generations_total", "generations spent (estimation + search)", ["strategy"], registry=r)
        self.flops = Counter("tts_flops_total", "inference FLOPs spent (estimation + search)", ["strategy"], registry=r)
        self.decisions = Counter("tts_routing_decisions_total", "routing decisions", ["bin", "strategy"], registry=r)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.search_seconds.observe(seconds)

    def observe_result(self, result: RoutedResult) -> None:
        d = result.decision
        name = d.strategy.name
        self.generations.labels(name).inc(result.cost.generations)
        self.flops.labels(name).inc(result.cost.flops)
        self.decisions.labels("forced" if d.forced else ("none" if d.bin is None else str(d.bin)), name).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
