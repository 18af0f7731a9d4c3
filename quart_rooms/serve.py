"""The Hypercorn configuration of the server, with the limits that protect it.

`quart-rooms serve` and the tests build their Hypercorn `Config` here, so
tests run with the limits production runs with. What each knob guards:

- `websocket_max_message_size`: Hypercorn buffers a whole websocket message
  before the app sees it (16 MiB by default), before Engine.IO's own packet
  limit is looked at and before any token is shown; it is set to
  `max_socket_packet_bytes`. (`quart_rooms.request_limits` also makes Hypercorn
  stop buffering and drop the connection at that point.)
- `h11_max_incomplete_size`, `h2_max_header_list_size`: the request line and
  headers one request may send (HTTP/1.1: answered 431 beyond it).
- `read_timeout`: seconds a connection may stay silent (Hypercorn has none by
  default). A body that trickles in is stopped by `body_timeout` in
  `quart_rooms.request_limits`, since every byte resets `read_timeout`.

Request bodies are not buffered by Hypercorn (it hands them to the app in
chunks of at most 64 KiB through a queue of `max_app_queue_size` chunks);
their limits are applied by `quart_rooms.request_limits`.
"""

from __future__ import annotations

from hypercorn.config import Config

from quart_rooms.settings import Settings

APPLICATION_PATH = "quart_rooms.asgi:app"
HEADER_BYTES = 16 * 1024  # request line + headers; a JWT and a refresh cookie take about 1 KiB
H2_FRAME_BYTES = 2**14  # the smallest maximum frame size RFC 9113 section 4.2 allows
H2_STREAMS = 100  # concurrent HTTP/2 streams per connection
GRACEFUL_TIMEOUT = 5  # seconds in-flight requests get when the server stops


def bind_address(host: str, port: int) -> str:
    """Hypercorn's bind string for `host` and `port` (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(settings: Settings, *, host: str, port: int, workers: int = 1) -> Config:
    """Hypercorn's Config for serving `quart_rooms.asgi:app` on `host`:`port` with `workers` processes.

    Limits come from `settings`: `read_timeout` (seconds of silence before a
    connection is closed) and `max_socket_packet_bytes` (the largest websocket
    message Hypercorn will buffer, in bytes). Logs: errors to stderr at
    `log_level`, no access log. The event loop (worker_class) is left to the caller.
    """
    config = Config()
    config.bind = [bind_address(host, port)]
    config.workers = workers
    config.application_path = APPLICATION_PATH
    config.read_timeout = settings.read_timeout
    config.websocket_max_message_size = settings.max_socket_packet_bytes
    config.h11_max_incomplete_size = HEADER_BYTES
    config.h2_max_header_list_size = HEADER_BYTES
    config.h2_max_inbound_frame_size = H2_FRAME_BYTES
    config.h2_max_concurrent_streams = H2_STREAMS
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = settings.log_level
    config.graceful_timeout = GRACEFUL_TIMEOUT
    return config
