"""Who is in which room: counted per user, so several tabs of one user are one member."""

from __future__ import annotations

from typing import Protocol


class Presence(Protocol):
    """Room membership of live sockets; a later broker-backed one can span processes."""

    def add(self, room: str, user: str, sid: str) -> bool:
        """Record a socket in a room; True when it is the user's first socket there."""

    def remove(self, room: str, user: str, sid: str) -> bool:
        """Forget a socket in a room; True when it was the user's last socket there."""

    def members(self, room: str) -> list[str]:
        """The users with at least one socket in the room, by name."""

    def sids(self, room: str, user: str | None = None) -> list[str]:
        """The sockets in a room (of one user, if given)."""

    def rooms_of(self, sid: str) -> list[str]:
        """The rooms a socket is in."""


class LocalPresence:
    """Presence kept in this process's memory."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, set[str]]] = {}
        self._by_sid: dict[str, set[str]] = {}

    def add(self, room: str, user: str, sid: str) -> bool:
        users = self._rooms.setdefault(room, {})
        first = user not in users
        users.setdefault(user, set()).add(sid)
        self._by_sid.setdefault(sid, set()).add(room)
        return first

    def remove(self, room: str, user: str, sid: str) -> bool:
        users = self._rooms.get(room, {})
        sids = users.get(user)
        if sids is None or sid not in sids:
            return False
        sids.discard(sid)
        self._by_sid.get(sid, set()).discard(room)
        if not self._by_sid.get(sid):
            self._by_sid.pop(sid, None)
        if sids:
            return False
        del users[user]
        if not users:
            del self._rooms[room]
        return True

    def members(self, room: str) -> list[str]:
        return sorted(self._rooms.get(room, {}))

    def sids(self, room: str, user: str | None = None) -> list[str]:
        users = self._rooms.get(room, {})
        if user is not None:
            return sorted(users.get(user, ()))
        return [sid for group in users.values() for sid in group]

    def rooms_of(self, sid: str) -> list[str]:
        return sorted(self._by_sid.get(sid, ()))
