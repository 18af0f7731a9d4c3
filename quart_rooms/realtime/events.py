"""Socket.IO event handlers: translate events to the chat use cases and errors to acks."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import socketio

from quart_rooms.access import Principal
from quart_rooms.api.schemas import MAX_ID, ROOM_PATTERN
from quart_rooms.auth.tokens import bearer_token
from quart_rooms.errors import AppError, BadRequest, NotInRoom, Unauthorized
from quart_rooms.realtime.fanout import broadcast
from quart_rooms.realtime.hub import Hub
from quart_rooms.services import Services
from quart_rooms.storage.models import isoformat

log = logging.getLogger(__name__)
_ROOM_RE = re.compile(ROOM_PATTERN)
Ack = dict[str, Any]
H = TypeVar("H", bound=Callable[..., Awaitable[Ack]])


def acked(handler: H) -> H:
    """Turn an AppError raised by a handler into an error ack; nothing else escapes silently."""

    @wraps(handler)
    async def wrapper(self: ChatNamespace, sid: str, data: Any = None, *rest: Any) -> Ack:
        try:
            return await handler(self, sid, data)
        except AppError as error:
            return error.ack()
        except Exception:
            log.exception("event %s failed", handler.__name__)
            return {"ok": False, "error": "internal_error", "message": "Something went wrong on the server."}

    return wrapper  # type: ignore[return-value]


def _payload(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadRequest("The payload must be an object.")
    return data


def _room_name(data: dict[str, Any]) -> str:
    room = data.get("room")
    if not isinstance(room, str) or not _ROOM_RE.match(room):
        raise BadRequest("room must be 1-64 characters of A-Z a-z 0-9 _ . -")
    return room


def _token_from(environ: dict[str, Any], auth: Any) -> str | None:
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return str(auth["token"])
    return bearer_token(environ.get("HTTP_AUTHORIZATION"))


class ChatNamespace(socketio.AsyncNamespace):
    """The default namespace: connect, join, leave, message, refresh, disconnect."""

    def __init__(self, services: Services, hub: Hub) -> None:
        super().__init__("/")
        self.svc = services
        self.hub = hub

    async def _user(self, sid: str) -> Principal:
        """The socket's account, re-checked (disabled or deleted accounts are refused)."""
        session = await self.get_session(sid)
        return await self.svc.access.principal(session["user"])

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Refuse a missing, bad or expired token; otherwise remember the user and greet them."""
        try:
            claims = self.svc.tokens.verify(_token_from(environ, auth))
            user = await self.svc.access.principal(claims.sub)
        except AppError as error:
            self.svc.metrics.connects_refused.labels(error.code).inc()
            raise socketio.exceptions.ConnectionRefusedError(
                error.message, {"code": error.code, "message": error.message}
            ) from None
        limit = self.svc.settings.max_sockets_per_user
        if self.hub.socket_count(user.username) >= limit:
            self.svc.metrics.connects_refused.labels("too_many_sockets").inc()
            message = f"At most {limit} connections per user."
            raise socketio.exceptions.ConnectionRefusedError(message, {"code": "too_many_sockets", "message": message})
        self.hub.add_socket(user.username, sid)  # before any await, so concurrent connects count it
        await self.save_session(sid, {"user": user.username, "exp": claims.exp})
        self.hub.expire_at(sid, claims.exp - time.time())
        self.svc.metrics.sockets.inc()
        # Anything emitted inside connect would reach the wire before the CONNECT
        # packet, so the greeting waits until the connection is complete.
        self.server.start_background_task(self._welcome, sid, user, claims.exp)

    async def _welcome(self, sid: str, user: Principal, exp: int) -> None:
        # The CONNECT packet goes out as soon as on_connect returns, without
        # suspending, so one turn of the loop is almost always enough.
        for attempt in range(200):
            if self.server.manager.is_connected(sid, "/"):
                break
            await asyncio.sleep(0 if attempt < 5 else 0.01)
        else:
            return
        settings = self.svc.settings
        await broadcast(self.server, "welcome", {
            "user": user.username,
            "is_admin": user.is_admin,
            "expires_in": max(0, int(exp - time.time())),
            "limits": {
                "max_message_chars": settings.max_message_chars,
                "messages_per_10s": settings.messages_per_10s,
            },
        }, sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        """Leave every room (announcing departures) and forget the socket."""
        try:
            session = await self.get_session(sid)
        except KeyError:
            return
        username = session["user"]
        for room in self.hub.presence.rooms_of(sid):
            await self.hub.leave(sid, username, room)
        self.hub.drop_socket(username, sid)
        self.svc.metrics.sockets.dec()

    @acked
    async def on_join(self, sid: str, data: Any) -> Ack:
        """Check access, then enter the room; ack with role, members and history."""
        payload = _payload(data)
        room = _room_name(payload)
        since_id = payload.get("since_id")
        if since_id is not None and (
            not isinstance(since_id, int) or isinstance(since_id, bool) or not 0 <= since_id <= MAX_ID
        ):
            raise BadRequest("since_id must be a whole number of 0 or more.")
        user = await self._user(sid)
        found, history = await self.svc.chat.history(user, room, since_id=since_id)
        first = await self.hub.enter(sid, user.username, room)
        try:  # a revoke or demotion that landed while the history was read must still win
            await self.svc.access.require(await self._user(sid), room, "read")
        except AppError:
            await self.hub.leave(sid, user.username, room, announce=False)
            raise
        if first:
            await self.hub.announce(room, user.username, "joined")
        return {
            "ok": True,
            "room": room,
            "role": found.role,
            "members": self.hub.presence.members(room),
            "history": [m.as_dict() for m in history],
        }

    @acked
    async def on_leave(self, sid: str, data: Any) -> Ack:
        """Leave a room the socket is in."""
        room = _room_name(_payload(data))
        if room not in self.hub.presence.rooms_of(sid):
            raise NotInRoom()
        session = await self.get_session(sid)
        await self.hub.leave(sid, session["user"], room)
        return {"ok": True}

    @acked
    async def on_message(self, sid: str, data: Any) -> Ack:
        """Post to a room the socket is in; acked once stored, after every member got it."""
        payload = _payload(data)
        room = _room_name(payload)
        if room not in self.hub.presence.rooms_of(sid):
            raise NotInRoom()
        user = await self._user(sid)
        stored = await self.svc.chat.post(user, room, payload.get("msg"), payload.get("client_id"))
        return {"ok": True, "id": stored.id, "ts": isoformat(stored.ts)}

    @acked
    async def on_refresh(self, sid: str, data: Any) -> Ack:
        """Take a fresh access token of the same user for this connection."""
        token = _payload(data).get("token")
        if not isinstance(token, str):
            raise BadRequest("token must be a string.")
        claims = self.svc.tokens.verify(token)
        session = await self.get_session(sid)
        if claims.sub != session["user"]:
            raise Unauthorized("The token belongs to another user.")
        await self.svc.access.principal(claims.sub)
        session["exp"] = claims.exp
        await self.save_session(sid, session)
        expires_in = max(0, int(claims.exp - time.time()))
        self.hub.expire_at(sid, claims.exp - time.time())
        return {"ok": True, "expires_in": expires_in}
