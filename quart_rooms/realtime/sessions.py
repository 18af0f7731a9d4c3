"""This process's live sockets: who each one is, its turn for events, its token's expiry."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from quart_rooms.access import Principal
from quart_rooms.auth.tokens import Claims


@dataclass(eq=False)
class Socket:
    """One connected Socket.IO client of this process."""

    sid: str
    user: Principal
    claims: Claims
    # Events take effect one at a time, in the order sent (contract 1.1, "Per-connection order").
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0  # events waiting for their turn
    rooms: dict[str, str] = field(default_factory=dict)  # lower-case name -> the room's name
    refusals: deque[float] = field(default_factory=deque)  # times of rate-limited messages
    closed: bool = False
    ending: bool = False  # the server is disconnecting it (a flood)

    def room(self, name: str) -> str | None:
        """The room's name if the socket is in it (names match regardless of case), else None."""
        return self.rooms.get(name.lower())

    def refused(self, window: float) -> int:
        """Count one more rate-limited message; how many in the last `window` seconds."""
        now = time.monotonic()
        self.refusals.append(now)
        while self.refusals and self.refusals[0] < now - window:
            self.refusals.popleft()
        return len(self.refusals)


class Sockets:
    """Every live socket of this process, by sid and by account."""

    def __init__(self) -> None:
        self._by_sid: dict[str, Socket] = {}
        self._by_user: dict[int, set[str]] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    def add(self, socket: Socket) -> None:
        """Remember a connected socket."""
        self._by_sid[socket.sid] = socket
        self._by_user.setdefault(socket.user.id, set()).add(socket.sid)

    def remove(self, sid: str) -> Socket | None:
        """Forget a socket that disconnected; it, if it was known."""
        self.cancel_expiry(sid)
        socket = self._by_sid.pop(sid, None)
        if socket is not None:
            socket.closed = True
            sids = self._by_user.get(socket.user.id, set())
            sids.discard(sid)
            if not sids:
                self._by_user.pop(socket.user.id, None)
        return socket

    def get(self, sid: str) -> Socket | None:
        """The live socket of that sid, or None."""
        return self._by_sid.get(sid)

    def of_user(self, user_id: int) -> list[Socket]:
        """The account's live sockets here."""
        return [self._by_sid[sid] for sid in sorted(self._by_user.get(user_id, ()))]

    def users(self) -> list[int]:
        """Ids of the accounts with a live socket here."""
        return list(self._by_user)

    def all(self) -> list[Socket]:
        """Every live socket here."""
        return list(self._by_sid.values())

    def count(self, user_id: int) -> int:
        """How many live sockets the account holds here."""
        return len(self._by_user.get(user_id, ()))

    def __len__(self) -> int:
        return len(self._by_sid)

    def expire_at(self, sid: str, delay: float, expire: Callable[[str], None]) -> None:
        """Call `expire(sid)` `delay` seconds from now unless the socket refreshes or goes first."""
        self.cancel_expiry(sid)
        self._expiry[sid] = asyncio.get_running_loop().call_later(max(0.0, delay), expire, sid)

    def cancel_expiry(self, sid: str) -> None:
        """Stop the socket's expiry timer."""
        handle = self._expiry.pop(sid, None)
        if handle is not None:
            handle.cancel()
