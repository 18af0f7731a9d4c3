"""The Socket.IO namespace: only the contract's events reach handlers, one at a time per socket.

python-socketio dispatches any event a client sends to `on_<name>`, reserved
names included (a client emitting `disconnect` would run the disconnect
handler while its socket stays open), and runs each event as its own task,
so two events of one socket could take effect out of order.
`trigger_event` therefore dispatches the contract's four client events only
(contract, "Socket.IO"), answers anything else `bad_request`, lets `connect`
and `disconnect` through only when the server itself raises them, and runs a
socket's events strictly in the order it sent them (contract 1.1,
"Per-connection order"). A message takes its turn until it is queued for
storage, not until it is stored, so a client may keep several in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from quart_rooms.access import Principal
from quart_rooms.auth.tokens import Tokens, bearer_token
from quart_rooms.chat.service import Chat
from quart_rooms.errors import (
    AppError,
    BadRequest,
    NotInRoom,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from quart_rooms.metrics import Metrics
from quart_rooms.names import MAX_ID, check_room_name, is_id, storable
from quart_rooms.realtime.hub import Hub
from quart_rooms.realtime.sessions import Socket
from quart_rooms.settings import Settings
from quart_rooms.storage.db import busy
from quart_rooms.storage.models import isoformat
from quart_rooms.storage.queries import StoredMessage

log = logging.getLogger(__name__)
Ack = dict[str, Any]
# Events one socket may have waiting for their turn (memory: at most this many packets of
# max_socket_packet_bytes); beyond it the socket counts as flooding and is closed. Far above
# what a client that waits for acks, or pipelines a few hundred messages, ever has.
MAX_WAITING = 1000
MAX_EPOCH_CHARS = 20
JOIN_ATTEMPTS = 3


def _payload(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadRequest("The payload must be an object.")
    return data


def _token_from(environ: dict[str, Any], auth: Any) -> str | None:
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return str(auth["token"])
    return bearer_token(environ.get("HTTP_AUTHORIZATION"))


def _address(environ: dict[str, Any]) -> str:
    scope = environ.get("asgi.scope") or {}
    client = scope.get("client") or (environ.get("REMOTE_ADDR"), 0)
    return str(client[0])


def _internal_error(event: str) -> Ack:
    log.exception("event %s failed", event)
    return {"ok": False, "error": "internal_error", "message": "Something went wrong on the server."}


class ChatNamespace(socketio.AsyncNamespace):
    """The default namespace: connect, join, leave, message, refresh, disconnect."""

    def __init__(self, settings: Settings, tokens: Tokens, chat: Chat, hub: Hub, metrics: Metrics) -> None:
        super().__init__("/")
        self.settings = settings
        self.chat = chat
        self.access = chat.access
        self.tokens = tokens
        self.hub = hub
        self.sockets = hub.sockets
        self.metrics = metrics
        self.accepting = True  # False once the server is shutting down
        self._events: dict[str, Callable[[Socket, dict[str, Any]], Awaitable[Any]]] = {
            "join": self._join,
            "leave": self._leave,
            "message": self._message,
            "refresh": self._refresh,
        }

    async def trigger_event(self, event: Any, *args: Any) -> Any:
        """Dispatch an event: the server's own connect/disconnect, or a contract event in its turn."""
        sid = args[0] if args else ""
        if event == "connect" and self.sockets.get(sid) is None:
            return await self.on_connect(*args)
        if event == "disconnect" and not self.server.manager.is_connected(sid, "/"):
            return await self.on_disconnect(*args)
        socket = self.sockets.get(sid)
        handler = self._events.get(event) if isinstance(event, str) else None
        if handler is None or socket is None:
            return BadRequest(f"Unknown event {str(event)[:40]!r}.").ack()
        if len(args) > 2:
            return BadRequest("An event takes one payload object and an acknowledgement, nothing more.").ack()
        if socket.waiting >= MAX_WAITING:
            if not socket.ending:
                socket.ending = True  # one disconnect, however many more frames arrive
                log.warning("socket %s of %s floods (%d events waiting); disconnecting", sid,
                            socket.user.username, socket.waiting)
                self.hub.spawn(self.server.disconnect(sid))
            return RateLimited("Too many events at once; the connection is closed.", retry_after=10.0).ack()
        socket.waiting += 1
        async with socket.turn:  # FIFO: events take effect in the order they arrived
            socket.waiting -= 1
            result = await self._run(event, handler, socket, args[1] if len(args) > 1 else None)
        if isinstance(result, asyncio.Future):  # a message queued in its turn: wait for storage outside it
            return await self._settle(event, result)
        return result

    async def _run(self, event: str, handler: Callable[..., Awaitable[Any]], socket: Socket, data: Any) -> Any:
        started = time.perf_counter()
        try:
            return await handler(socket, _payload(data))
        except AppError as error:
            self.metrics.event_errors.labels(event, error.code).inc()
            return error.ack()
        except Exception as error:
            overloaded = busy(error)
            if overloaded is None:
                return _internal_error(event)
            self.metrics.event_errors.labels(event, overloaded.code).inc()
            return overloaded.ack()
        finally:
            self.metrics.event_seconds.labels(event).observe(time.perf_counter() - started)

    async def _settle(self, event: str, pending: asyncio.Future[StoredMessage]) -> Ack:
        try:
            stored = await pending
            return {"ok": True, "id": stored.id, "ts": isoformat(stored.ts)}
        except AppError as error:
            self.metrics.event_errors.labels(event, error.code).inc()
            return error.ack()
        except Exception:
            return _internal_error(event)

    async def _principal(self, socket: Socket) -> Principal:
        """The socket's account, re-checked (gone, disabled or ended sessions are refused)."""
        claims = socket.claims
        user = await self.access.authenticate(claims.uid, claims.ver, claims.sid)
        socket.user = user
        return user

    # Connection ---------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Refuse a missing, bad or expired token; otherwise remember the socket and greet it."""
        try:
            if not self.accepting:
                raise Unavailable("The server is shutting down; connect again shortly.")
            claims = self.tokens.verify(_token_from(environ, auth))
            for _ in range(JOIN_ATTEMPTS):  # an admin change during the check (disabling the account): again
                generation = self.access.generation
                user = await self.access.authenticate(claims.uid, claims.ver, claims.sid)
                if generation == self.access.generation:
                    break
            else:
                raise Unavailable("Accounts changed during the connect; connect again.")
            limit = self.settings.max_sockets_per_user
            if self.sockets.count(user.id) >= limit:
                raise _TooManySockets(f"At most {limit} connections per user.")
        except AppError as error:
            self.metrics.connects_refused.labels(error.code).inc()
            log.info("connect refused: code=%s address=%s", error.code, _address(environ))
            raise socketio.exceptions.ConnectionRefusedError(
                error.message, {"code": error.code, "message": error.message}
            ) from None
        self.sockets.add(Socket(sid, user, claims))  # no await since the count: concurrent connects see it
        self.sockets.expire_at(sid, claims.exp - time.time(), self._expired)
        self.metrics.sockets.inc()
        # Anything emitted inside connect would reach the wire before the CONNECT
        # packet, so the greeting waits until the connection is complete.
        self.hub.spawn(self._welcome(sid))

    def _expired(self, sid: str) -> None:
        self.hub.end_soon(sid, "token_expired")

    async def _welcome(self, sid: str) -> None:
        # The CONNECT packet goes out as soon as on_connect returns, without
        # suspending, so one turn of the loop is almost always enough.
        for attempt in range(200):
            if self.server.manager.is_connected(sid, "/"):
                break
            await asyncio.sleep(0 if attempt < 5 else 0.01)
        socket = self.sockets.get(sid)
        if socket is None:
            return
        settings = self.settings
        self.hub.tell(socket, "welcome", {
            "user": socket.user.username,
            "is_admin": socket.user.is_admin,
            "expires_in": max(0, int(socket.claims.exp - time.time())),
            "limits": {
                "max_message_chars": settings.max_message_chars,
                "messages_per_10s": settings.messages_per_10s,
                "max_recovery": settings.max_recovery,
            },
        })

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        """Leave every room (announcing departures) and forget the socket."""
        socket = self.sockets.remove(sid)
        if socket is None:
            return
        self.metrics.sockets.dec()
        for room in self.hub.presence.local.rooms_of(sid):
            try:
                if await self.hub.presence.leave(room, socket.user.username, sid):
                    self.hub.announce(room, socket.user.username, "left")
            except Exception:
                log.exception("leaving room %s on disconnect failed", room)

    # Events -------------------------------------------------------------------

    async def _join(self, socket: Socket, payload: dict[str, Any]) -> Ack:
        """Check access, then enter the room; ack with role, members, history and the room's epoch."""
        room = check_room_name(payload.get("room"))
        since_id, epoch = payload.get("since_id"), payload.get("epoch")
        if since_id is not None and not is_id(since_id):
            raise BadRequest(f"since_id must be a whole number from 0 to {MAX_ID}.")
        if epoch is not None and (
            not isinstance(epoch, str) or not 0 < len(epoch) <= MAX_EPOCH_CHARS or not storable(epoch)
        ):
            raise BadRequest(f"epoch must be a string of 1-{MAX_EPOCH_CHARS} characters.")
        for _ in range(JOIN_ATTEMPTS):
            generation = self.access.generation
            user = await self._principal(socket)
            found, feed = await self.chat.open_room(user, room)
            again = socket.room(found.room) is not None  # joining a room it is in: history only
            entered = False  # in presence, not yet in the room: undone unless the join completes
            try:
                if not again:
                    entered = True
                    first = await self.hub.presence.enter(found.room, user.username, socket.sid)
                members = await self.hub.presence.members(found.room)
                history = await self.chat.history(feed, since_id=since_id, epoch=epoch)
                # From here to hub.enter nothing suspends: every message is either in
                # `history` or delivered live to the socket, once (see chat.feed).
                if socket.closed:
                    raise Unauthorized("The connection closed.")
                if self.access.generation != generation:
                    continue  # an admin change meanwhile: decide again (finally leaves presence)
                self.hub.enter(socket, found.room)
                entered = False
            finally:
                self.chat.feeds.release(feed)
                if entered:  # leave no trace of a join that failed, was cancelled or decides again
                    await self._leave_presence(found.room, user.username, socket.sid)
            if not again and first:
                self.hub.announce(found.room, user.username, "joined")
            self.metrics.joins.inc()
            ack: Ack = {
                "ok": True,
                "room": found.room,
                "role": found.role,
                "epoch": found.epoch,
                "members": members if user.username in members else sorted([*members, user.username]),
                "history": [m.as_dict() for m in history.messages],
            }
            if since_id is not None:
                ack["more"] = history.more
            if history.reset:
                ack["reset"] = True
            return ack
        raise Unavailable("Access to the room changed during the join; try again.")

    async def _leave_presence(self, room: str, username: str, sid: str) -> None:
        try:
            await self.hub.presence.leave(room, username, sid)
        except Exception:
            log.exception("undoing the presence of a join that did not complete failed (room %s)", room)

    async def _leave(self, socket: Socket, payload: dict[str, Any]) -> Ack:
        """Leave a room the socket is in."""
        room = socket.room(check_room_name(payload.get("room")))
        if room is None:
            raise NotInRoom()
        await self.hub.leave(socket, room)
        return {"ok": True}

    async def _message(self, socket: Socket, payload: dict[str, Any]) -> asyncio.Future[StoredMessage]:
        """Post to a room the socket is in; acked once stored, after every member here got it."""
        room = socket.room(check_room_name(payload.get("room")))
        if room is None:
            raise NotInRoom()
        msg, client_id = self.chat.check_text(payload.get("msg"), payload.get("client_id"))
        user = await self._principal(socket)
        try:
            pending = await self.chat.post(user, room, msg, client_id)
        except AppError as error:
            if error.code == "rate_limited":
                self.metrics.rate_limited.labels("messages").inc()
            if error.code == "rate_limited" and socket.refused(10.0) > 2 * self.settings.messages_per_10s:
                if not socket.ending:
                    socket.ending = True
                    log.warning("socket %s of %s keeps sending past its rate limit; disconnecting",
                                socket.sid, user.username)
                    self.hub.spawn(self.server.disconnect(socket.sid))
            raise
        return pending

    async def _refresh(self, socket: Socket, payload: dict[str, Any]) -> Ack:
        """Take a fresh access token of the same account for this connection."""
        token = payload.get("token")
        if not isinstance(token, str):
            raise BadRequest("token must be a string.")
        claims = self.tokens.verify(token)
        if claims.uid != socket.user.id:
            raise Unauthorized("The token belongs to another user.")
        socket.user = await self.access.authenticate(claims.uid, claims.ver, claims.sid)
        socket.claims = claims
        self.sockets.expire_at(socket.sid, claims.exp - time.time(), self._expired)
        return {"ok": True, "expires_in": max(0, int(claims.exp - time.time()))}


class _TooManySockets(AppError):
    code, status, default_message = "too_many_sockets", 429, "Too many connections."
