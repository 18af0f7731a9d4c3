"""Prometheus metrics of one server (prometheus-client), named by Prometheus' conventions.

Counters end in `_total`, durations are histograms in seconds. Each app keeps
its own registry, so several apps in one process (tests) do not mix.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The metrics the server keeps; rendered at GET /metrics."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.http_requests = Counter(
            "quart_rooms_http_requests", "HTTP requests answered", ["method", "status"], registry=registry
        )
        self.sockets = Gauge("quart_rooms_sockets", "Live Socket.IO connections", registry=registry)
        self.connects_refused = Counter(
            "quart_rooms_connects_refused", "Socket.IO connections refused", ["code"], registry=registry
        )
        self.joins = Counter("quart_rooms_joins", "Rooms joined by sockets", registry=registry)
        self.messages = Counter("quart_rooms_messages_stored", "Messages stored", registry=registry)
        self.deliveries = Counter(
            "quart_rooms_deliveries", "Messages put on sockets' queues (one per recipient)", registry=registry
        )
        self.event_errors = Counter(
            "quart_rooms_event_errors", "Socket.IO events answered with an error", ["event", "code"],
            registry=registry,
        )
        self.event_seconds = Histogram(
            "quart_rooms_event_seconds", "Time to take a Socket.IO event into effect", ["event"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )

    def render(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
