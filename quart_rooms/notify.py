"""What the admin side tells live connections when access changes."""

from __future__ import annotations

from typing import Protocol


class Notifier(Protocol):
    """Carries access changes to live sockets (the real-time server implements it)."""

    async def revoked(self, username: str, room: str) -> None:
        """The user lost access to the room: their sockets leave it and get `kicked`."""

    async def room_deleted(self, room: str) -> None:
        """The room is gone: every socket leaves it and gets `kicked`."""

    async def room_restricted(self, room: str, keep: set[str]) -> None:
        """The room became private: sockets of users not in `keep` leave it and get `kicked`."""

    async def user_restricted(self, username: str, allowed: set[str]) -> None:
        """The user lost admin rights: their sockets leave every room not in `allowed`, with `kicked`."""

    async def user_disabled(self, username: str) -> None:
        """The account was disabled or deleted: disconnect all its sockets."""


class NullNotifier:
    """For processes with no live sockets (the command line)."""

    async def revoked(self, username: str, room: str) -> None:
        return None

    async def room_deleted(self, room: str) -> None:
        return None

    async def room_restricted(self, room: str, keep: set[str]) -> None:
        return None

    async def user_restricted(self, username: str, allowed: set[str]) -> None:
        return None

    async def user_disabled(self, username: str) -> None:
        return None
