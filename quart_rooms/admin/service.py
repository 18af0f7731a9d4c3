"""Admin use cases: each change, its audit entry and its change-log entry in one transaction.

Live effects (kicks, `access` events, disconnects) are not made here: every
server process applies them when it reads the change from the log
(`quart_rooms.changes`). A use case runs as a task the app owns
(`quart_rooms.tasks`), so a client that drops its request after the commit
cannot stop the change from taking effect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quart_rooms.access import Principal, may_change_grant
from quart_rooms.auth.passwords import Passwords
from quart_rooms.changes import ChangeLog, commit_change
from quart_rooms.errors import Conflict, Forbidden, NotFound
from quart_rooms.names import check_room_name, check_username
from quart_rooms.storage import queries
from quart_rooms.storage.db import Database
from quart_rooms.storage.models import AuditEntry, Grant, Room, User
from quart_rooms.tasks import OwnedTasks


@dataclass(frozen=True, slots=True)
class GrantChange:
    """A grant as it is now: the room's and the user's names as stored, the role (None: revoked)."""

    room: str
    username: str
    role: str | None


class Admin:
    """Changes to users, rooms and grants, made by an actor and written to the audit log."""

    def __init__(self, db: Database, changes: ChangeLog, passwords: Passwords, tasks: OwnedTasks) -> None:
        self._db = db
        self._changes = changes
        self._passwords = passwords
        self._owned = tasks.run

    async def _commit(self, session: AsyncSession, change_id: int | None) -> None:
        await commit_change(session, self._changes, change_id)

    async def _user(self, session: AsyncSession, username: str) -> User:
        check_username(username)  # a name no account can have never reaches storage
        user = await queries.get_user(session, username)
        if user is None:
            raise NotFound(f"No user named {username!r}.")
        return user

    async def _room(self, session: AsyncSession, name: str) -> Room:
        check_room_name(name)
        room = await queries.get_room(session, name)
        if room is None:
            raise NotFound(f"No room named {name!r}.")
        return room

    # Accounts -----------------------------------------------------------------

    def create_user(self, actor: str, username: str, password: str, *, is_admin: bool) -> Awaitable[User]:
        """A new account; Conflict if the name is taken in any case."""
        return self._owned(self._create_user(actor, username, password, is_admin))

    async def _create_user(self, actor: str, username: str, password: str, is_admin: bool) -> User:
        password_hash = await self._passwords.hash(password)  # outside the write transaction
        async with self._db.writes() as session:
            if await queries.get_user(session, username) is not None:
                raise Conflict(f"A user named {username!r} exists already.")
            user = User(username=username, password_hash=password_hash, is_admin=is_admin, disabled=False)
            session.add(user)
            try:
                await session.flush()
            except IntegrityError as exc:  # created by a concurrent request
                raise Conflict(f"A user named {username!r} exists already.") from exc
            change_id = await queries.append_change(session, "user.create", {"user": username, "user_id": user.id})
            user.token_version = change_id  # tokens of an earlier account of this name never match
            queries.audit(session, actor, "user.create", f"user:{username}" + (" is_admin=true" if is_admin else ""))
            await self._commit(session, change_id)
        return user

    def update_user(
        self, actor: str, username: str, *, password: str | None, is_admin: bool | None, disabled: bool | None
    ) -> Awaitable[User]:
        """Change an account; a new password or disabling ends its tokens and sockets at once."""
        if actor.lower() == username.lower() and (disabled or is_admin is False):
            raise Conflict("Admins may not disable themselves or drop their own admin role.")
        return self._owned(self._update_user(actor, username, password, is_admin, disabled))

    async def _update_user(
        self, actor: str, username: str, password: str | None, is_admin: bool | None, disabled: bool | None
    ) -> User:
        password_hash = await self._passwords.hash(password) if password is not None else None
        async with self._db.writes() as session:
            user = await self._user(session, username)
            changes = []
            was_admin = user.is_admin
            ended = False
            if password_hash is not None:
                user.password_hash = password_hash
                ended = True
                changes.append("password")
            if is_admin is not None and is_admin != user.is_admin:
                user.is_admin = is_admin
                changes.append(f"is_admin={str(is_admin).lower()}")
            if disabled is not None and disabled != user.disabled:
                user.disabled = disabled
                ended = ended or disabled
                changes.append(f"disabled={str(disabled).lower()}")
            change_id = None
            if changes:
                change_id = await queries.append_change(session, "user.update", {
                    "user": user.username, "user_id": user.id, "admin": [was_admin, user.is_admin], "ended": ended,
                })
                if ended:
                    user.token_version = change_id
                    await queries.revoke_user_tokens(session, user.id)
                queries.audit(session, actor, "user.update", f"user:{user.username} " + ",".join(changes))
            await self._commit(session, change_id)
        return user

    def delete_user(self, actor: str, username: str) -> Awaitable[None]:
        """Delete an account (its messages stay); its sockets are disconnected at once."""
        if actor.lower() == username.lower():
            raise Conflict("Admins may not delete themselves.")
        return self._owned(self._delete_user(actor, username))

    async def _delete_user(self, actor: str, username: str) -> None:
        async with self._db.writes() as session:
            user = await self._user(session, username)
            data = {"user": user.username, "user_id": user.id}
            await session.delete(user)
            change_id = await queries.append_change(session, "user.delete", data)
            queries.audit(session, actor, "user.delete", f"user:{user.username}")
            await self._commit(session, change_id)

    async def users(self) -> Sequence[User]:
        """Every account."""
        async with self._db.reads() as session:
            return await queries.list_users(session)

    # Rooms --------------------------------------------------------------------

    def create_room(self, actor: str, name: str, *, title: str | None, public: bool) -> Awaitable[Room]:
        """A new room; Conflict if the name is taken in any case."""
        return self._owned(self._create_room(actor, name, title, public))

    async def _create_room(self, actor: str, name: str, title: str | None, public: bool) -> Room:
        async with self._db.writes() as session:
            if await queries.get_room(session, name) is not None:
                raise Conflict(f"A room named {name!r} exists already.")
            room = Room(name=name, title=title, public=public, last_message_id=0)
            session.add(room)
            try:
                await session.flush()
            except IntegrityError as exc:  # created by a concurrent request
                raise Conflict(f"A room named {name!r} exists already.") from exc
            change_id = await queries.append_change(
                session, "room.create", {"room": name, "room_id": room.id, "public": public}
            )
            room.epoch = str(change_id)  # a room made again under this name starts a new epoch
            queries.audit(session, actor, "room.create", f"room:{name}" + (" public=true" if public else ""))
            await self._commit(session, change_id)
        return room

    def update_room(self, actor: str, name: str, *, title: str | None, public: bool | None) -> Awaitable[Room]:
        """Change a room's title or visibility; making it private kicks every member without a grant."""
        return self._owned(self._update_room(actor, name, title, public))

    async def _update_room(self, actor: str, name: str, title: str | None, public: bool | None) -> Room:
        async with self._db.writes() as session:
            room = await self._room(session, name)
            changes = []
            was_public = room.public
            if title is not None and (title or None) != room.title:
                room.title = title or None
                changes.append("title")
            if public is not None and public != room.public:
                room.public = public
                changes.append(f"public={str(public).lower()}")
            change_id = None
            if changes:
                change_id = await queries.append_change(
                    session, "room.update", {"room": room.name, "room_id": room.id, "public": [was_public, room.public]}
                )
                queries.audit(session, actor, "room.update", f"room:{room.name} " + ",".join(changes))
            await self._commit(session, change_id)
        return room

    async def rooms(self) -> Sequence[Room]:
        """Every room."""
        async with self._db.reads() as session:
            return await queries.list_rooms(session)

    def delete_room(self, actor: str, name: str) -> Awaitable[None]:
        """Delete a room with its messages and grants; every socket in it is kicked."""
        return self._owned(self._delete_room(actor, name))

    async def _delete_room(self, actor: str, name: str) -> None:
        async with self._db.writes() as session:
            room = await self._room(session, name)
            grants = dict(await queries.list_grants(session, room.id))
            data = {"room": room.name, "room_id": room.id, "public": room.public, "grants": grants}
            await session.delete(room)
            change_id = await queries.append_change(session, "room.delete", data)
            queries.audit(session, actor, "room.delete", f"room:{room.name}")
            await self._commit(session, change_id)

    # Grants -------------------------------------------------------------------

    def put_grant(self, actor: Principal, room_name: str, username: str, role: str) -> Awaitable[GrantChange]:
        """Give a user a role in a room, or change it (admins; moderators for read and write)."""
        return self._owned(self._set_grant(actor, room_name, username, role))

    def delete_grant(self, actor: Principal, room_name: str, username: str) -> Awaitable[GrantChange]:
        """Take a user's grant away; their sockets leave the room at once unless it is public."""
        return self._owned(self._set_grant(actor, room_name, username, None))

    async def _set_grant(self, actor: Principal, room_name: str, username: str, role: str | None) -> GrantChange:
        async with self._db.writes() as session:
            room = await self._room(session, room_name)
            user = await self._user(session, username)
            grant = await queries.get_grant(session, room.id, user.id)
            old = grant.role if grant else None
            actor_grant = None if actor.is_admin else (await queries.grants_of_user(session, actor.id)).get(room.id)
            if not may_change_grant(actor=actor, room_public=room.public, actor_grant=actor_grant, old=old, new=role):
                raise Forbidden("Only admins give, change or take the moderate role.")
            if role is None and grant is None:
                raise NotFound(f"{user.username!r} has no grant in room {room.name!r}.")
            if role is not None and grant is None:
                grant = Grant(room_id=room.id, user_id=user.id, role=role)
                session.add(grant)
            elif role is not None and grant is not None:
                grant.role = role
            elif grant is not None:
                await session.delete(grant)
            change_id = await queries.append_change(session, "grant.put" if role else "grant.delete", {
                "room": room.name, "room_id": room.id, "user": user.username, "user_id": user.id,
                "old": old, "new": role,
            })
            target = f"room:{room.name} user:{user.username}" + (f" role:{role}" if role else "")
            queries.audit(session, actor.username, "grant.put" if role else "grant.delete", target)
            await self._commit(session, change_id)
        return GrantChange(room.name, user.username, role)

    async def grants(self, room_name: str) -> Sequence[tuple[str, str]]:
        """(username, role) of every grant in a room."""
        async with self._db.reads() as session:
            room = await self._room(session, room_name)
            return await queries.list_grants(session, room.id)

    async def audit(self, limit: int) -> Sequence[AuditEntry]:
        """The newest audit entries first."""
        async with self._db.reads() as session:
            return await queries.audit_entries(session, limit)
