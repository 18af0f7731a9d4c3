"""Builds the python-socketio server with the limits and origin policy from settings.

Rooms span processes through the app's own broker and room feeds
(`realtime/broker.py`, `chat/feed.py`), not through python-socketio's Redis
manager: that manager publishes each emit once with no order and no
recovery, and an emit waits for a broker that hangs, while the contract needs
every member to get a room's messages once and in id order across nodes, with
storage as the record (docs/architecture.md, "Several processes").
"""

from __future__ import annotations

import socketio

from quart_rooms.settings import Settings

ROOM_PREFIX = "room:"


def internal_room(room: str) -> str:
    """Socket.IO's name for a chat room, apart from the per-sid rooms it keeps itself."""
    return ROOM_PREFIX + room


def cors_origins(settings: Settings) -> str | list[str] | None:
    """None checks Origin against the Host (same origin); a list allows those origins."""
    if settings.allow_any_origin and "*" in settings.allowed_origins:
        return "*"
    return list(settings.allowed_origins) or None


def create_server(settings: Settings) -> socketio.AsyncServer:
    """An ASGI AsyncServer: each event a task (ordered per socket by the namespace), limits from settings."""
    return socketio.AsyncServer(
        async_mode="asgi",
        cors_allowed_origins=cors_origins(settings),
        max_http_buffer_size=settings.max_socket_packet_bytes,
        always_connect=False,
        logger=False,
        engineio_logger=False,
    )
