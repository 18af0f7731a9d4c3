"""Room access rules: who may read or write where. Deny by default.

`role()` answers with a role or None, `require()` returns the room or raises.
To a non-admin an unknown room and a room that is not theirs look the same
(`forbidden`), so room names do not leak; admins are told `no_such_room`.
Answers are cached in memory until an admin change calls `invalidate()`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quart_rooms.cache import LoadOnce
from quart_rooms.errors import Forbidden, NoSuchRoom, Unauthorized
from quart_rooms.storage import queries
from quart_rooms.storage.models import Room

Role = Literal["read", "write"]
A = TypeVar("A")
K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")
ROLE_RANK: dict[str, int] = {"read": 1, "write": 2}
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """An active account, as the rules see it."""

    id: int
    username: str
    is_admin: bool


@dataclass(frozen=True, slots=True)
class RoomAccess:
    """A room and the role a user holds in it, with the rule that gave it."""

    room_id: int
    room: str
    title: str | None
    public: bool
    role: Role
    rule: str


class Access:
    """The one place that decides access; cached, invalidated by admin changes."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, cache: bool = True) -> None:
        self._sessions = sessions
        # Off when several processes serve: a relayed admin change can be lost
        # while the broker is down, so then every check reads the database.
        self.cache = cache
        self._principals: LoadOnce[str, Principal | None] = LoadOnce()
        self._rooms: LoadOnce[str, Room | None] = LoadOnce()
        self._grants: LoadOnce[int, dict[int, str]] = LoadOnce()
        # Keyed by the whole Principal: a decision made for an admin is not one for the same name demoted.
        self._decisions: dict[tuple[Principal, str], RoomAccess | None] = {}
        # Bumped by every invalidation, so caches elsewhere know to drop what they hold.
        self.generation = 0

    def invalidate(self) -> None:
        """Forget every cached answer (after any change to users, rooms or grants)."""
        self._principals.clear()
        self._decisions.clear()
        self._rooms.clear()
        self._grants.clear()
        self.generation += 1

    async def principal(self, username: str) -> Principal:
        """The active account of that name; Unauthorized if it is gone or disabled."""
        found = await self._cached(self._principals, username, lambda: self._load_principal(username))
        if found is None:
            raise Unauthorized("The account is not active.")
        return found

    async def _load_principal(self, username: str) -> Principal | None:
        async with self._sessions() as session:
            user = await queries.get_user(session, username)
        return Principal(user.id, user.username, user.is_admin) if user and not user.disabled else None

    async def role(self, user: Principal, room: str) -> RoomAccess | None:
        """The user's access to the room, or None (also for an unknown room)."""
        key = (user, room)
        if key in self._decisions:
            return self._decisions[key]
        generation = self.generation
        found = await self._decide(user, room)
        if self.cache and found is not None and generation == self.generation:  # no admin change meanwhile
            self._decisions[key] = found
        return found

    async def require(self, user: Principal, room: str, need: Role) -> RoomAccess:
        """The user's access to the room if it is at least `need`; raise otherwise."""
        found = await self.role(user, room)
        if found is None and user.is_admin:
            raise NoSuchRoom()
        if found is None or ROLE_RANK[found.role] < ROLE_RANK[need]:
            log.info("denied %s %s in room %r (has %s)", user.username, need, room,
                     found.role if found else "nothing")
            raise Forbidden("You may not do that in this room." if found else "You may not enter this room.")
        return found

    async def _decide(self, user: Principal, name: str) -> RoomAccess | None:
        # Rooms by name and each user's grants are read once and then served
        # from memory, so a new (user, room) pair rarely costs a query.
        room = await self._cached(self._rooms, name, lambda: self._query(queries.get_room, name))
        if room is None:
            self._rooms.discard(name)  # made-up names must not pile up in memory
            return None
        if user.is_admin or room.public:
            return _rule(user, room, None)
        grants = await self._cached(self._grants, user.id, lambda: self._query(queries.grants_of_user, user.id))
        return _rule(user, room, grants.get(room.id))

    async def _cached(self, store: LoadOnce[K, V], key: K, load: Callable[[], Awaitable[V]]) -> V:
        return await store.get(key, load) if self.cache else await load()

    async def _query(self, query: Callable[[AsyncSession, A], Awaitable[R]], arg: A) -> R:
        async with self._sessions() as session:
            return await query(session, arg)

    async def joinable(self, user: Principal) -> list[RoomAccess]:
        """Every room the user may join, by name."""
        async with self._sessions() as session:
            rows = await queries.rooms_with_grants(session, user.id)
        return [found for room, granted in rows if (found := _rule(user, room, granted))]


def _rule(user: Principal, room: Room, granted: str | None) -> RoomAccess | None:
    """The rule itself: admins write everywhere, anyone writes in public rooms, else the grant."""
    if user.is_admin:
        role, rule = "write", "admin"
    elif room.public:
        role, rule = "write", "public"
    elif granted in ROLE_RANK:
        role, rule = granted, "grant"
    else:
        return None
    return RoomAccess(room.id, room.name, room.title, room.public, role, rule)  # type: ignore[arg-type]
