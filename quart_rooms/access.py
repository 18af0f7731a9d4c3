"""Room access rules: who may read, write or moderate where. Deny by default.

`role()` answers with a role or None, `require()` returns the room or raises.
To a non-admin an unknown room and a room that is not theirs look the same
(`forbidden`), so room names do not leak; admins are told `no_such_room`
(contract, "Socket.IO"). Answers are cached in memory; every server process
drops what a change makes stale when it applies an entry of the admin-change
log (`quart_rooms.changes`; `changed()`), so a cached answer does not outlive
a change there. A process learns of another's change within the log's poll
interval at worst (at once while the broker works).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quart_rooms.cache import LoadOnce
from quart_rooms.errors import Forbidden, NoSuchRoom, Unauthorized
from quart_rooms.storage import queries
from quart_rooms.storage.models import Room

Role = Literal["read", "write", "moderate"]
A = TypeVar("A")
K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")
ROLE_RANK: dict[str, int] = {"read": 1, "write": 2, "moderate": 3}
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """An active account, as the rules see it."""

    id: int
    username: str
    is_admin: bool
    token_version: int = 0


@dataclass(frozen=True, slots=True)
class RoomAccess:
    """A room and the role a user holds in it, with the rule that gave it."""

    room_id: int
    room: str
    title: str | None
    public: bool
    epoch: str
    role: Role
    rule: str


def effective_role(*, is_admin: bool, public: bool, granted: str | None) -> Role | None:
    """The rule itself (contract 1.1): admins and everyone in a public room write, or more if
    granted more; in a private room a grant gives its role; else nothing."""
    grant = granted if granted in ROLE_RANK else None
    if is_admin or public:
        return "moderate" if grant == "moderate" else "write"
    return grant  # type: ignore[return-value]


def may_change_grant(*, actor: Principal, room_public: bool, actor_grant: str | None,
                     old: str | None, new: str | None) -> bool:
    """Whether the actor may change a grant from `old` to `new` (None: no grant) in a room.

    Contract 1.1, "Moderation": admins change any grant; a room's moderators
    give, change and take `read` and `write` grants in that room, and never
    touch `moderate`.
    """
    if actor.is_admin:
        return True
    role = effective_role(is_admin=False, public=room_public, granted=actor_grant)
    plain = (None, "read", "write")
    return role == "moderate" and old in plain and new in plain


def may_delete_message(*, actor: Principal, role: Role | None, author_id: int | None) -> bool:
    """Whether the actor may delete a message (contract 1.1): its author (the account that wrote it, not
    a later one of the same name), a moderator of the room, an admin."""
    if actor.is_admin or role == "moderate":
        return True
    return role is not None and author_id is not None and author_id == actor.id


def _rule_name(*, is_admin: bool, public: bool) -> str:
    return "admin" if is_admin else "public" if public else "grant"


class Access:
    """The one place that decides access; cached until `invalidate()`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._principals: LoadOnce[int, Principal | None] = LoadOnce()
        self._ended: LoadOnce[str, bool] = LoadOnce()
        self._rooms: LoadOnce[str, Room | None] = LoadOnce()
        self._grants: LoadOnce[int, dict[int, str]] = LoadOnce()
        self._all_rooms: LoadOnce[None, Sequence[Room]] = LoadOnce()  # every room, by name
        # Per is_admin: each room's access with no grant, for the room list read from _all_rooms.
        self._no_grant: dict[bool, tuple[Sequence[Room], list[RoomAccess | None]]] = {}
        # Keyed by the whole Principal: a decision made for an admin is not one for the same name demoted.
        self._decisions: dict[tuple[Principal, str], RoomAccess | None] = {}
        # Bumped by every invalidation: work that read access before it must not act on what it read.
        self.generation = 0
        # Told the reason of every denial (the metrics count them).
        self.on_denied: Callable[[str], None] = lambda reason: None

    def invalidate(self) -> None:
        """Forget every cached answer (after a change to users, rooms or grants)."""
        self._principals.clear()
        self._ended.clear()
        self._decisions.clear()
        self._rooms.clear()
        self._grants.clear()
        self._all_rooms.clear()
        self._no_grant.clear()
        self.generation += 1

    def session_ended(self, session_id: str) -> None:
        """Forget what is cached of one sign-in session (its end was committed): the rest stays."""
        self._ended.discard(session_id)
        self.generation += 1

    def changed(self, kind: str, data: dict[str, Any]) -> None:
        """Drop what a committed change (changes.py; kinds as `queries.append_change` logs them) makes
        stale. A new account, or a message deleted, changes no access; a session's end, only that one."""
        if kind in ("user.create", "message.delete"):
            return
        if kind == "session.end":
            self.session_ended(str(data.get("sid")))
            return
        self.invalidate()

    async def principal(self, user_id: int) -> Principal:
        """The active account of that id; Unauthorized if it is gone or disabled."""
        found = await self._principals.get(user_id, lambda: self._load_principal(user_id))
        if found is None:
            raise Unauthorized("The account is not active.")
        return found

    async def _load_principal(self, user_id: int) -> Principal | None:
        async with self._sessions() as session:
            user = await queries.get_user_by_id(session, user_id)
        if user is None or user.disabled:
            return None
        return Principal(user.id, user.username, user.is_admin, user.token_version)

    async def authenticate(self, user_id: int, token_version: int, session_id: str) -> Principal:
        """The account behind a verified token's claims (uid, ver, sid).

        Raises Unauthorized when the account is gone or disabled, its tokens were
        ended after this one was issued (a password change, disabling,
        re-creation), or the token's sign-in session was ended (sign-out):
        contract 1.1, "Tokens outlive neither the account nor its password".
        """
        user = await self.principal(user_id)
        if user.token_version != token_version:
            raise Unauthorized("The session has ended; sign in again.")
        if await self._ended.get(session_id, lambda: self._query(queries.session_ended, session_id)):
            raise Unauthorized("The session has ended; sign in again.")
        return user

    async def role(self, user: Principal, room: str) -> RoomAccess | None:
        """The user's access to the room, or None (also for an unknown room)."""
        key = (user, room.lower())  # room names are case-insensitive (contract, "Names")
        if key in self._decisions:
            return self._decisions[key]
        generation = self.generation
        found = await self._decide(user, room)
        if found is not None and generation == self.generation:  # no change meanwhile
            self._decisions[key] = found
        return found

    async def require(self, user: Principal, room: str, need: Role) -> RoomAccess:
        """The user's access to the room if it is at least `need`; raise otherwise."""
        found = await self.role(user, room)
        if found is None and user.is_admin:
            raise NoSuchRoom()
        if found is None or ROLE_RANK[found.role] < ROLE_RANK[need]:
            reason = "no_access" if found is None else f"role_{found.role}"
            log.info("access denied: user=%s room=%r need=%s reason=%s", user.username, room, need, reason)
            self.on_denied(reason)
            raise Forbidden("You may not do that in this room." if found else "You may not enter this room.")
        return found

    async def require_moderator(self, user: Principal, room: str) -> RoomAccess:
        """The room if the user may moderate it: a moderator of it, or an admin (contract 1.1, "Moderation")."""
        if user.is_admin:
            return await self.require(user, room, "read")
        return await self.require(user, room, "moderate")

    async def _decide(self, user: Principal, name: str) -> RoomAccess | None:
        # Rooms by name and each user's grants are read once and then served
        # from memory, so a new (user, room) pair rarely costs a query.
        key = name.lower()
        room = await self._rooms.get(key, lambda: self._query(queries.get_room, name))
        if room is None:
            self._rooms.discard(key)  # made-up names must not pile up in memory
            return None
        grants = await self._grants.get(user.id, lambda: self._query(queries.grants_of_user, user.id))
        return _access(user, room, grants.get(room.id))

    async def _query(self, query: Callable[[AsyncSession, A], Awaitable[R]], arg: A) -> R:
        async with self._sessions() as session:
            return await query(session, arg)

    async def joinable(self, user: Principal) -> list[RoomAccess]:
        """Every room the user may join, by name (from memory once read: a page that reconnects
        asks for it each time, and a room list changes only through the change log)."""
        rooms = await self._all_rooms.get(None, lambda: self._query(_list_rooms, None))
        grants = await self._grants.get(user.id, lambda: self._query(queries.grants_of_user, user.id))
        cached = self._no_grant.get(user.is_admin)
        if cached is None or cached[0] is not rooms:  # the same for every user without grants: once per list
            anyone = Principal(0, "", user.is_admin, 0)
            cached = self._no_grant[user.is_admin] = (rooms, [_access(anyone, room, None) for room in rooms])
        if not grants:
            return [found for found in cached[1] if found is not None]
        return [
            found
            for room, plain in zip(rooms, cached[1], strict=True)
            if (found := _access(user, room, grants[room.id]) if room.id in grants else plain)
        ]


async def _list_rooms(session: AsyncSession, _: None) -> Sequence[Room]:
    return await queries.list_rooms(session)


def _access(user: Principal, room: Room, granted: str | None) -> RoomAccess | None:
    role = effective_role(is_admin=user.is_admin, public=room.public, granted=granted)
    if role is None:
        return None
    rule = _rule_name(is_admin=user.is_admin, public=room.public)
    return RoomAccess(room.id, room.name, room.title, room.public, room.epoch, role, rule)
