"""Builds the python-socketio server with the limits and origin policy from settings."""

from __future__ import annotations

import redis.asyncio
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
    manager = (
        socketio.AsyncRedisManager(settings.redis_url, channel=settings.redis_channel)
        if settings.redis_url
        else None
    )
    return socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=cors_origins(settings),
        max_http_buffer_size=settings.max_socket_packet_bytes,
        always_connect=False,
        logger=False,
        engineio_logger=False,
    )


class BrokerCheck:
    """A small Redis client of its own, so /readyz can tell whether the broker answers."""

    def __init__(self, url: str) -> None:
        self._client = redis.asyncio.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    async def ping(self) -> None:
        """Raise unless Redis answers PING."""
        await self._client.ping()

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()
