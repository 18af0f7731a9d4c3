"""Live state of this process's sockets: who is where, kicks, disconnects, deliveries."""

from __future__ import annotations

import asyncio

import socketio

from quart_rooms.presence import LocalPresence, Presence
from quart_rooms.realtime.fanout import broadcast
from quart_rooms.realtime.server import internal_room
from quart_rooms.storage.queries import StoredMessage


class Hub:
    """Tracks each user's sockets and carries admin changes to them (a `Notifier`)."""

    def __init__(self, sio: socketio.AsyncServer, presence: Presence | None = None) -> None:
        self.sio = sio
        self.presence = presence or LocalPresence()
        self.user_sids: dict[str, set[str]] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # Sockets --------------------------------------------------------------------

    def add_socket(self, username: str, sid: str) -> None:
        """Remember a connected socket of a user."""
        self.user_sids.setdefault(username, set()).add(sid)

    def drop_socket(self, username: str, sid: str) -> None:
        """Forget a socket that disconnected."""
        sids = self.user_sids.get(username)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self.user_sids[username]
        self.cancel_expiry(sid)

    def socket_count(self, username: str) -> int:
        """How many live sockets the user holds here."""
        return len(self.user_sids.get(username, ()))

    def expire_at(self, sid: str, delay: float) -> None:
        """End the socket's session `delay` seconds from now unless it refreshes its token."""
        self.cancel_expiry(sid)
        loop = asyncio.get_running_loop()
        self._expiry[sid] = loop.call_later(max(0.0, delay), self._start_expire, sid)

    def _start_expire(self, sid: str) -> None:
        task = asyncio.get_running_loop().create_task(self._expire(sid))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    def cancel_expiry(self, sid: str) -> None:
        """Stop the socket's expiry timer."""
        handle = self._expiry.pop(sid, None)
        if handle is not None:
            handle.cancel()

    async def _expire(self, sid: str) -> None:
        self._expiry.pop(sid, None)
        await self.sio.emit("session_expired", {"reason": "token_expired"}, to=sid)
        await self.sio.disconnect(sid)

    # Rooms ----------------------------------------------------------------------

    async def enter(self, sid: str, username: str, room: str) -> bool:
        """Put the socket in the room; True when it is the user's first socket there."""
        await self.sio.enter_room(sid, internal_room(room))
        return self.presence.add(room, username, sid)

    async def leave(self, sid: str, username: str, room: str, *, announce: bool = True) -> None:
        """Take the socket out of the room, telling the others when the user is gone from it."""
        await self.sio.leave_room(sid, internal_room(room))
        if self.presence.remove(room, username, sid) and announce:
            await self.announce(room, username, "left")

    async def announce(self, room: str, username: str, action: str) -> None:
        """`presence` to the others in the room (not the user's own sockets)."""
        await broadcast(
            self.sio,
            "presence",
            {"room": room, "user": username, "action": action},
            internal_room(room),
            skip=set(self.presence.sids(room, username)),
        )

    async def deliver(self, message: StoredMessage) -> None:
        """Send a committed message to its room."""
        await broadcast(self.sio, "message", message.as_dict(), internal_room(message.room))

    # Notifier: admin changes reach live sockets ------------------------------------

    async def revoked(self, username: str, room: str) -> None:
        """The user's sockets leave the room, then get `kicked` (in that order: no message slips in)."""
        sids = self.presence.sids(room, username)
        for sid in sids:
            await self.leave(sid, username, room)
        for sid in sids:
            await self.sio.emit("kicked", {"room": room, "reason": "revoked"}, to=sid)

    async def room_restricted(self, room: str, keep: set[str]) -> None:
        """Members of a room turned private who have no grant are kicked as if revoked."""
        for user in self.presence.members(room):
            if user not in keep:
                await self.revoked(user, room)

    async def room_deleted(self, room: str) -> None:
        """Every socket leaves the room and gets `kicked`."""
        members = [(user, sid) for user in self.presence.members(room) for sid in self.presence.sids(room, user)]
        for user, sid in members:
            await self.leave(sid, user, room, announce=False)
        for _user, sid in members:
            await self.sio.emit("kicked", {"room": room, "reason": "room_deleted"}, to=sid)

    async def user_restricted(self, username: str, allowed: set[str]) -> None:
        """A demoted admin is kicked from each room they are in that is not in `allowed`."""
        rooms = {room for sid in self.user_sids.get(username, ()) for room in self.presence.rooms_of(sid)}
        for room in sorted(rooms - allowed):
            await self.revoked(username, room)

    async def user_disabled(self, username: str) -> None:
        """Disconnect every socket of the account."""
        for sid in list(self.user_sids.get(username, ())):
            await self.sio.disconnect(sid)
