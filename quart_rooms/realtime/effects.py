"""Live effects of admin changes on this process's sockets, applied as each change is read from the log.

Every process runs this for every change, so sockets on every node are
reached, also when the change was made while the broker was away. For each
local account the change concerns it works out the role before and after
(`access.effective_role` on the facts the change carries, the rest read
fresh), then: `access {room, role}` to every socket of the account whose role
changed (contract 1.1, "Access changes are pushed both ways"), `kicked` from
rooms where the role is gone (leaving first), and `session_expired` plus a
disconnect where the account's tokens ended.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from quart_rooms.access import Access, Role, effective_role
from quart_rooms.changes import Change
from quart_rooms.chat.feed import Feeds
from quart_rooms.metrics import Metrics
from quart_rooms.realtime.hub import Hub
from quart_rooms.realtime.sessions import Socket
from quart_rooms.storage import queries
from quart_rooms.storage.db import Database

log = logging.getLogger(__name__)


class LiveEffects:
    """A change-log listener acting on this process's sockets and room feeds."""

    def __init__(self, hub: Hub, access: Access, feeds: Feeds, db: Database, metrics: Metrics) -> None:
        self.hub = hub
        self.access = access
        self.feeds = feeds
        self.db = db
        self.metrics = metrics
        self._change: Change | None = None

    async def __call__(self, change: Change) -> None:
        """Apply one change (in log order; the access caches were dropped for it already)."""
        handler = getattr(self, "_" + change.kind.replace(".", "_"), None)
        if handler is not None:
            self._change = change
            await handler(change.data)

    # Accounts and sessions -----------------------------------------------------

    async def _user_update(self, data: dict[str, Any]) -> None:
        sockets = self.hub.sockets.of_user(data["user_id"])
        if not sockets:
            return
        if data["ended"]:
            await self._end(sockets, "account_changed")
            return
        was_admin, is_admin = data["admin"]
        for socket in sockets:  # keep each socket's view of the account current
            socket.user = type(socket.user)(socket.user.id, socket.user.username, is_admin, socket.user.token_version)
        if was_admin == is_admin:
            return
        async with self.db.reads() as session:
            rows = await queries.rooms_with_grants(session, data["user_id"])
        for room, granted in rows:
            before = effective_role(is_admin=was_admin, public=room.public, granted=granted)
            after = effective_role(is_admin=is_admin, public=room.public, granted=granted)
            await self._role_changed(sockets, room.name, before, after)

    async def _user_delete(self, data: dict[str, Any]) -> None:
        await self._end(self.hub.sockets.of_user(data["user_id"]), "account_deleted")

    async def _session_end(self, data: dict[str, Any]) -> None:
        sockets = [s for s in self.hub.sockets.of_user(data["user_id"]) if s.claims.sid == data["sid"]]
        await self._end(sockets, "signed_out")

    async def _end(self, sockets: Iterable[Socket], reason: str) -> None:
        for socket in list(sockets):
            await self.hub.end(socket, reason)

    # Rooms and grants ----------------------------------------------------------

    async def _grant_put(self, data: dict[str, Any]) -> None:
        sockets = self.hub.sockets.of_user(data["user_id"])
        if not sockets:
            return
        async with self.db.reads() as session:
            room = await queries.get_room(session, data["room"])
        if room is None or room.id != data["room_id"]:
            return
        is_admin = sockets[0].user.is_admin
        before = effective_role(is_admin=is_admin, public=room.public, granted=data["old"])
        after = effective_role(is_admin=is_admin, public=room.public, granted=data["new"])
        await self._role_changed(sockets, room.name, before, after)

    _grant_delete = _grant_put

    async def _room_create(self, data: dict[str, Any]) -> None:
        for sockets in self._by_account():
            role = effective_role(is_admin=sockets[0].user.is_admin, public=data["public"], granted=None)
            await self._role_changed(sockets, data["room"], None, role)

    async def _room_update(self, data: dict[str, Any]) -> None:
        was_public, is_public = data["public"]
        if was_public == is_public:
            return
        accounts = self._by_account()
        async with self.db.reads() as session:
            grants = await queries.grants_in_room(session, data["room_id"], [s[0].user.id for s in accounts])
        for sockets in accounts:
            user = sockets[0].user
            before = effective_role(is_admin=user.is_admin, public=was_public, granted=grants.get(user.id))
            after = effective_role(is_admin=user.is_admin, public=is_public, granted=grants.get(user.id))
            await self._role_changed(sockets, data["room"], before, after)

    async def _room_delete(self, data: dict[str, Any]) -> None:
        self.feeds.drop(data["room_id"])
        grants = {name.lower(): role for name, role in data["grants"].items()}
        accounts = self._by_account()
        for sockets in accounts:
            user = sockets[0].user
            role = effective_role(is_admin=user.is_admin, public=data["public"], granted=grants.get(user.username.lower()))
            if role is not None:
                self._tell(sockets, data["room"], None)
        await self.hub.kick([s for sockets in accounts for s in sockets], data["room"], "room_deleted")

    async def _message_delete(self, data: dict[str, Any]) -> None:
        self.feeds.delete(data["room_id"], data["epoch"], data["id"])

    # Helpers -------------------------------------------------------------------

    def _by_account(self) -> list[list[Socket]]:
        """This process's sockets grouped by account."""
        return [sockets for user_id in self.hub.sockets.users() if (sockets := self.hub.sockets.of_user(user_id))]

    async def _role_changed(self, sockets: list[Socket], room: str, before: Role | None, after: Role | None) -> None:
        """Tell every socket of the account, and kick those in the room when the role is gone."""
        if before == after:
            return
        self._tell(sockets, room, after)
        if after is None and await self.hub.kick(sockets, room, "revoked") and self._change is not None:
            lag = (datetime.now(timezone.utc) - self._change.ts).total_seconds()
            self.metrics.revocation_seconds.observe(max(0.0, lag))

    def _tell(self, sockets: list[Socket], room: str, role: Role | None) -> None:
        for socket in sockets:
            if not socket.closed:
                self.hub.tell(socket, "access", {"room": room, "role": role})
