"""Prometheus metrics of one server (prometheus-client), named by Prometheus' conventions.

Counters end in `_total`, durations are histograms in seconds. Each app keeps
its own registry, so several apps in one process (tests) do not mix. Under
`serve --workers N` every worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode, set up by
`quart_rooms.serve`), and a scrape of any worker adds up all of them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The metrics the server keeps; rendered at GET /metrics."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.http_requests = Counter(
            "quart_rooms_http_requests", "HTTP requests answered", ["method", "status"], registry=registry
        )
        self.sockets = Gauge(
            "quart_rooms_sockets", "Live Socket.IO connections", registry=registry, multiprocess_mode="livesum"
        )
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

        self.denials = Counter(
            "quart_rooms_denials", "Refused actions, by reason (access rules, connects, limits)", ["reason"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "quart_rooms_rate_limited", "Events refused by a rate limit", ["limit"], registry=registry
        )
        self.sign_ins = Counter(
            "quart_rooms_sign_ins", "Sign-in attempts, by result (success, failure, throttled)", ["result"],
            registry=registry,
        )
        self.revocation_seconds = Histogram(
            "quart_rooms_revocation_seconds", "From an access change's commit to its kick on this process",
            buckets=LATENCY_BUCKETS, registry=registry,
        )

    def render(self) -> bytes:
        """The Prometheus text format of every metric (of every worker, in multiprocess mode)."""
        if os.environ.get(MULTIPROCESS_ENV):
            combined = CollectorRegistry()
            MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)
