"""Admin use cases: each change and its audit entry in one transaction, then live effects."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quart_rooms.access import Access
from quart_rooms.auth.passwords import hash_password
from quart_rooms.errors import Conflict, NotFound
from quart_rooms.notify import Notifier
from quart_rooms.storage import queries
from quart_rooms.storage.models import AuditEntry, Grant, Room, User


class Admin:
    """Changes to users, rooms and grants, made by `actor` and written to the audit log."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], access: Access, notifier: Notifier) -> None:
        self._sessions = sessions
        self._access = access
        self._notifier = notifier

    async def _user(self, session: AsyncSession, username: str) -> User:
        user = await queries.get_user(session, username)
        if user is None:
            raise NotFound(f"No user named {username!r}.")
        return user

    async def _room(self, session: AsyncSession, name: str) -> Room:
        room = await queries.get_room(session, name)
        if room is None:
            raise NotFound(f"No room named {name!r}.")
        return room

    async def create_user(self, actor: str, username: str, password: str, *, is_admin: bool) -> User:
        """A new account; Conflict if the name is taken."""
        async with self._sessions() as session:
            if await queries.get_user(session, username) is not None:
                raise Conflict(f"A user named {username!r} exists already.")
            user = User(username=username, password_hash=hash_password(password), is_admin=is_admin, disabled=False)
            session.add(user)
            queries.audit(session, actor, "user.create", f"user:{username}" + (" admin" if is_admin else ""))
            try:
                await session.commit()
            except IntegrityError as exc:  # created by a concurrent request
                raise Conflict(f"A user named {username!r} exists already.") from exc
        self._access.invalidate()
        return user

    async def update_user(
        self, actor: str, username: str, *, password: str | None, is_admin: bool | None, disabled: bool | None
    ) -> User:
        """Change an account; disabling it ends its sessions and sockets at once."""
        if actor == username and (disabled or is_admin is False):
            raise Conflict("Admins may not disable themselves or drop their own admin role.")
        async with self._sessions() as session:
            user = await self._user(session, username)
            changes = []
            if password is not None:
                user.password_hash = hash_password(password)
                await queries.revoke_user_tokens(session, user.id)
                changes.append("password")
            demoted = is_admin is False and user.is_admin
            if is_admin is not None and is_admin != user.is_admin:
                user.is_admin = is_admin
                changes.append(f"is_admin={str(is_admin).lower()}")
            if disabled is not None and disabled != user.disabled:
                user.disabled = disabled
                if disabled:
                    await queries.revoke_user_tokens(session, user.id)
                changes.append(f"disabled={str(disabled).lower()}")
            if changes:
                queries.audit(session, actor, "user.update", f"user:{username} " + ",".join(changes))
            await session.commit()
            allowed = set(await queries.rooms_open_to(session, user.id)) if demoted else set()
        self._access.invalidate()
        if user.disabled:
            await self._notifier.user_disabled(username)
        elif demoted:  # no longer an admin: leave the private rooms without a grant
            await self._notifier.user_restricted(username, allowed)
        return user

    async def delete_user(self, actor: str, username: str) -> None:
        """Delete an account (its messages stay); its sockets are disconnected at once."""
        if actor == username:
            raise Conflict("Admins may not delete themselves.")
        async with self._sessions() as session:
            user = await self._user(session, username)
            await session.delete(user)
            queries.audit(session, actor, "user.delete", f"user:{username}")
            await session.commit()
        self._access.invalidate()
        await self._notifier.user_disabled(username)

    async def users(self) -> Sequence[User]:
        """Every account."""
        async with self._sessions() as session:
            return await queries.list_users(session)

    async def create_room(self, actor: str, name: str, *, title: str | None, public: bool) -> Room:
        """A new room; Conflict if the name is taken."""
        async with self._sessions() as session:
            if await queries.get_room(session, name) is not None:
                raise Conflict(f"A room named {name!r} exists already.")
            room = Room(name=name, title=title, public=public, last_message_id=0)
            session.add(room)
            queries.audit(session, actor, "room.create", f"room:{name}" + (" public" if public else ""))
            try:
                await session.commit()
            except IntegrityError as exc:
                raise Conflict(f"A room named {name!r} exists already.") from exc
        self._access.invalidate()
        return room

    async def update_room(self, actor: str, name: str, *, title: str | None, public: bool | None) -> Room:
        """Change a room's title or visibility; making it private kicks every member without a grant."""
        async with self._sessions() as session:
            room = await self._room(session, name)
            changes = []
            if title is not None and title != room.title:
                room.title = title or None
                changes.append("title")
            closing = public is False and room.public
            if public is not None and public != room.public:
                room.public = public
                changes.append(f"public={str(public).lower()}")
            if changes:
                queries.audit(session, actor, "room.update", f"room:{name} " + ",".join(changes))
            keep = set(await queries.allowed_in_private_room(session, room.id)) if closing else set()
            await session.commit()
        self._access.invalidate()
        if closing:
            await self._notifier.room_restricted(name, keep)
        return room

    async def rooms(self) -> Sequence[Room]:
        """Every room."""
        async with self._sessions() as session:
            return await queries.list_rooms(session)

    async def delete_room(self, actor: str, name: str) -> None:
        """Delete a room with its messages and grants; every socket in it is kicked."""
        async with self._sessions() as session:
            room = await self._room(session, name)
            await session.delete(room)
            queries.audit(session, actor, "room.delete", f"room:{name}")
            await session.commit()
        self._access.invalidate()
        await self._notifier.room_deleted(name)

    async def put_grant(self, actor: str, room_name: str, username: str, role: str) -> Grant:
        """Give a user a role in a room (or change it); takes effect on the next event."""
        async with self._sessions() as session:
            room = await self._room(session, room_name)
            user = await self._user(session, username)
            grant = await queries.get_grant(session, room.id, user.id)
            if grant is None:
                grant = Grant(room_id=room.id, user_id=user.id, role=role)
                session.add(grant)
            else:
                grant.role = role
            queries.audit(session, actor, "grant.put", f"room:{room_name} user:{username} role:{role}")
            await session.commit()
        self._access.invalidate()
        return grant

    async def delete_grant(self, actor: str, room_name: str, username: str) -> None:
        """Take a user's grant away; their sockets leave the room at once unless it is public."""
        async with self._sessions() as session:
            room = await self._room(session, room_name)
            user = await self._user(session, username)
            grant = await queries.get_grant(session, room.id, user.id)
            if grant is None:
                raise NotFound(f"{username!r} has no grant in room {room_name!r}.")
            await session.delete(grant)
            queries.audit(session, actor, "grant.delete", f"room:{room_name} user:{username}")
            await session.commit()
            still_allowed = room.public or user.is_admin
        self._access.invalidate()
        if not still_allowed:
            await self._notifier.revoked(username, room_name)

    async def grants(self, room_name: str) -> Sequence[tuple[str, str]]:
        """(username, role) of every grant in a room."""
        async with self._sessions() as session:
            room = await self._room(session, room_name)
            return await queries.list_grants(session, room.id)

    async def audit(self, limit: int) -> Sequence[AuditEntry]:
        """The newest audit entries first."""
        async with self._sessions() as session:
            return await queries.audit_entries(session, limit)
