"""Prometheus metrics of one server, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    """The counters the server keeps; rendered at GET /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "quart_rooms_http_requests", "HTTP requests answered", ["method", "status"], registry=self.registry
        )
        self.sockets = Gauge("quart_rooms_sockets", "Live Socket.IO connections", registry=self.registry)
        self.connects_refused = Counter(
            "quart_rooms_connects_refused", "Socket.IO connections refused", ["code"], registry=self.registry
        )
        self.messages = Counter("quart_rooms_messages", "Messages stored and delivered", registry=self.registry)

    def render(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
