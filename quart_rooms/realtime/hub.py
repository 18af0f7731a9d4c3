"""What happens to this process's sockets: entering and leaving rooms, presence, kicks, ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import socketio

from quart_rooms.presence import Presence
from quart_rooms.realtime.fanout import deliver, send
from quart_rooms.realtime.server import end_transport, internal_room
from quart_rooms.realtime.sessions import Socket, Sockets

log = logging.getLogger(__name__)


class Hub:
    """This process's sockets in rooms; tells other processes about presence through `publish`."""

    def __init__(self, sio: socketio.AsyncServer, sockets: Sockets, presence: Presence) -> None:
        self.sio = sio
        self.sockets = sockets
        self.presence = presence
        # Set when a broker is configured: tells the other processes (presence events).
        self.publish: Callable[[dict[str, Any]], None] = lambda message: None
        self._tasks: set[asyncio.Task[None]] = set()

    def deliver(self, event: str, room: str, data: dict[str, object]) -> int:
        """An event to every local socket in a chat room (the room feeds' way out); how many got it."""
        return deliver(self.sio, event, data, internal_room(room))

    def enter(self, socket: Socket, room: str) -> None:
        """Put the socket in the Socket.IO room now, without suspending (see RoomFeed)."""
        self.sio.manager.basic_enter_room(socket.sid, "/", internal_room(room))  # synchronous
        socket.rooms[room.lower()] = room

    async def leave(self, socket: Socket, room: str, *, announce: bool = True) -> None:
        """Take the socket out of the room at once, then tell the others if the user is gone from it."""
        self.sio.manager.basic_leave_room(socket.sid, "/", internal_room(room))
        socket.rooms.pop(room.lower(), None)
        if await self.presence.leave(room, socket.user.username, socket.sid) and announce:
            self.announce(room, socket.user.username, "left")

    def announce(self, room: str, user: str, action: str, *, everywhere: bool = True) -> None:
        """`presence` to the others in the room on every process (not to the user's own sockets)."""
        self.local_presence(room, user, action)
        if everywhere:
            self.publish({"t": "p", "room": room, "user": user, "action": action})

    def local_presence(self, room: str, user: str, action: str) -> None:
        """`presence` to this process's sockets in the room but the user's own."""
        skip = self.presence.local.sids(room, user)
        deliver(self.sio, "presence", {"room": room, "user": user, "action": action}, internal_room(room), skip=skip)

    def reaped(self, gone: list[tuple[str, str]]) -> None:
        """Users whose last socket was on a process that died: announce that they left."""
        for room, user in gone:
            self.announce(room, user, "left")

    async def kick(self, sockets: list[Socket], room: str, reason: str) -> int:
        """Each socket in the room leaves it, then gets `kicked` (so no message slips in between),
        all of them before presence is updated; how many were in the room."""
        gone: list[tuple[Socket, str]] = []
        for socket in sockets:
            name = socket.room(room)
            if name is None:
                continue
            self.sio.manager.basic_leave_room(socket.sid, "/", internal_room(name))
            socket.rooms.pop(name.lower(), None)
            send(self.sio, socket.sid, "kicked", {"room": name, "reason": reason})
            gone.append((socket, name))
        for socket, name in gone:
            if await self.presence.leave(name, socket.user.username, socket.sid):
                self.announce(name, socket.user.username, "left")
        return len(gone)

    def tell(self, socket: Socket, event: str, data: dict[str, object]) -> None:
        """An event to one socket."""
        send(self.sio, socket.sid, event, data)

    async def end(self, socket: Socket, reason: str) -> None:
        """`session_expired {reason}`, then disconnect (the client signs in again rather than reconnect)."""
        if socket.closed:
            return
        send(self.sio, socket.sid, "session_expired", {"reason": reason})
        await self.sio.disconnect(socket.sid)

    def end_soon(self, sid: str, reason: str) -> None:
        """end() from a timer: as a task."""
        socket = self.sockets.get(sid)
        if socket is not None:
            self.spawn(self.end(socket, reason))

    def spawn(self, work: Any) -> None:
        """Run a coroutine as a task this hub keeps until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close_all(self) -> None:
        """Close every socket's transport at once (at shutdown), with no Socket.IO DISCONNECT packet
        (which tells clients not to come back): official clients see the transport close and
        reconnect by themselves, to another node if there is one (contract 1.1, "Shutdown")."""
        sockets = list(self.sio.eio.sockets.values())
        for socket in sockets:  # every transport first: clients go elsewhere without waiting for the rest
            end_transport(socket)
        for socket in sockets:  # then the disconnect handlers (presence), one at a time
            await socket.close(wait=False, abort=True)
