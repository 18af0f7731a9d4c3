"""Builds the python-socketio server with the limits and origin policy from settings.

Rooms span processes through the app's own broker and room feeds
(`realtime/broker.py`, `chat/feed.py`), not through python-socketio's Redis
manager: that manager publishes each emit once with no order and no
recovery, and an emit waits for a broker that hangs, while the contract needs
every member to get a room's messages once and in id order across nodes, with
storage as the record (docs/architecture.md, "Several processes").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import socketio
from socketio import packet as sio_packet

from quart_rooms.settings import Settings

ROOM_PREFIX = "room:"
# Seconds an Engine.IO session may stay without a Socket.IO connect. A page renews its token
# between the transport opening and the connect, which takes seconds when every page does at
# once (after a restart): room for that, not for idle sessions to pile up.
CONNECT_TIMEOUT = 30.0
log = logging.getLogger(__name__)


def internal_room(room: str) -> str:
    """Socket.IO's name for a chat room, apart from the per-sid rooms it keeps itself."""
    return ROOM_PREFIX + room


def cors_origins(settings: Settings) -> str | list[str] | None:
    """None checks Origin against the Host (same origin); a list allows those origins."""
    if settings.allow_any_origin and "*" in settings.allowed_origins:
        return "*"
    return list(settings.allowed_origins) or None


class ChatServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's AsyncServer, strict about what a client may send before any handler runs.

    - Binary packets are refused (the contract has none): python-socketio would
      buffer as many attachments as a packet announces, each under the packet
      limit, without bound.
    - A malformed packet is ignored (a debug log line), instead of logging a
      traceback per frame; the connection stays as it was.
    - An Engine.IO session that does not connect to the namespace within
      CONNECT_TIMEOUT seconds (of opening, or of leaving the namespace) is
      closed, so idle unauthenticated sessions do not pile up (their pongs keep
      read_timeout from firing).
    - A second CONNECT on a connected session is confirmed with the same sid,
      not refused (see _handle_connect).

    Overrides four of python-socketio's internal handlers (tests/test_reach_ins.py).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._closing: set[asyncio.Task[None]] = set()  # closes under way, kept until done

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        asyncio.get_running_loop().call_later(CONNECT_TIMEOUT, self._close_if_unconnected, eio_sid)
        return await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_disconnect(self, eio_sid: str, namespace: str | None, reason: Any = None) -> Any:
        result = await super()._handle_disconnect(eio_sid, namespace, reason)
        # The client left the namespace (41) but may keep its Engine.IO session: it gets the same
        # CONNECT_TIMEOUT to connect again as a new session, then it is closed.
        if eio_sid in self.eio.sockets:
            asyncio.get_running_loop().call_later(CONNECT_TIMEOUT, self._close_if_unconnected, eio_sid)
        return result

    def _close_if_unconnected(self, eio_sid: str) -> None:
        if eio_sid in self.eio.sockets and self.manager.sid_from_eio_sid(eio_sid, "/") is None:
            why = "no Socket.IO connect within %.0f s" % CONNECT_TIMEOUT
            task = asyncio.get_running_loop().create_task(self._close(eio_sid, why))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> Any:
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is not None and self.manager.is_connected(sid, namespace):
            # A second CONNECT on a connected session: official clients send one when their auth
            # callback answers after the transport they asked on was replaced (a slow token
            # renewal across a reconnect). python-socketio would answer CONNECT_ERROR, after which
            # the client drops the socket while still calling itself connected, and reads
            # nothing more. Confirm the connection it has; its identity stays the one checked.
            await self._send_packet(eio_sid, self.packet_class(sio_packet.CONNECT, {"sid": sid}, namespace=namespace))
            return None
        return await super()._handle_connect(eio_sid, namespace, data)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if not isinstance(data, str) or data[:1] in (str(sio_packet.BINARY_EVENT), str(sio_packet.BINARY_ACK)):
            self._binary_packet.pop(eio_sid, None)
            await self._close(eio_sid, "a binary packet")
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError) as exc:  # a packet that does not parse
            log.debug("ignored a malformed packet: %s", exc)

    async def _close(self, eio_sid: str, why: str) -> None:
        environ = self.environ.get(eio_sid) or {}
        client = (environ.get("asgi.scope") or {}).get("client") or ("?",)
        log.info("closing the connection of %s: %s", client[0], why)
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None:
            await close_transport(socket)


def end_transport(socket: Any) -> None:
    """Close an Engine.IO socket's transport at once, with no Socket.IO DISCONNECT packet (which tells
    official clients not to come back): they see the transport close and reconnect by themselves.
    The socket's disconnect handler has not run yet: `close_transport` runs it."""
    socket.queue.put_nowait(None)  # ends the socket's writer, which closes the websocket or poll


async def close_transport(socket: Any) -> None:
    """`end_transport`, then the socket's disconnect handler (leaving its rooms)."""
    end_transport(socket)
    await socket.close(wait=False, abort=True)


def create_server(settings: Settings) -> socketio.AsyncServer:
    """An ASGI AsyncServer: each event a task (ordered per socket by the namespace), limits from settings."""
    return ChatServer(
        async_mode="asgi",
        cors_allowed_origins=cors_origins(settings),
        max_http_buffer_size=settings.max_socket_packet_bytes,
        always_connect=False,
        logger=False,
        engineio_logger=False,
    )
