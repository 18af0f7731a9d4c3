"""Builds the python-socketio server with the limits and origin policy from settings."""

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
    """An ASGI AsyncServer; with a Redis URL, rooms are shared through Redis pub/sub."""
    manager = socketio.AsyncRedisManager(settings.redis_url) if settings.redis_url else None
    return socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=cors_origins(settings),
        max_http_buffer_size=settings.max_socket_packet_bytes,
        always_connect=False,
        logger=False,
        engineio_logger=False,
    )
