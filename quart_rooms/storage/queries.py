"""Queries: every read and write of the tables goes through here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, case, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quart_rooms.storage.models import AuditEntry, Grant, Message, RefreshToken, Room, User, isoformat, utcnow


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as clients see it."""

    id: int
    room: str
    user: str
    msg: str
    ts: datetime

    def as_dict(self) -> dict[str, object]:
        """The contract's message object."""
        return {
            "id": self.id,
            "room": self.room,
            "user": self.user,
            "msg": self.msg,
            "ts": isoformat(self.ts),
        }


# Users ----------------------------------------------------------------------

async def get_user(session: AsyncSession, username: str) -> User | None:
    """The user of that name, or None."""
    return (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()


async def get_user_by_id(session: AsyncSession, user_id: int) -> User | None:
    """The user of that id, or None."""
    return await session.get(User, user_id)


async def list_users(session: AsyncSession) -> Sequence[User]:
    """Every user, by name."""
    return (await session.execute(select(User).order_by(User.username))).scalars().all()


async def count_users(session: AsyncSession) -> int:
    """How many accounts exist."""
    return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


# Rooms and grants -------------------------------------------------------------

async def get_room(session: AsyncSession, name: str) -> Room | None:
    """The room of that name, or None."""
    return (await session.execute(select(Room).where(Room.name == name))).scalar_one_or_none()


async def list_rooms(session: AsyncSession) -> Sequence[Room]:
    """Every room, by name."""
    return (await session.execute(select(Room).order_by(Room.name))).scalars().all()


async def get_grant(session: AsyncSession, room_id: int, user_id: int) -> Grant | None:
    """The grant of one user in one room, or None."""
    return await session.get(Grant, (room_id, user_id))


async def grants_of_user(session: AsyncSession, user_id: int) -> dict[int, str]:
    """{room id: role} of every grant a user holds."""
    rows = await session.execute(select(Grant.room_id, Grant.role).where(Grant.user_id == user_id))
    return {room_id: role for room_id, role in rows.all()}


async def list_grants(session: AsyncSession, room_id: int) -> Sequence[tuple[str, str]]:
    """(username, role) of every grant in a room, by username."""
    rows = await session.execute(
        select(User.username, Grant.role)
        .join(Grant, Grant.user_id == User.id)
        .where(Grant.room_id == room_id)
        .order_by(User.username)
    )
    return [(name, role) for name, role in rows.all()]


async def allowed_in_private_room(session: AsyncSession, room_id: int) -> Sequence[str]:
    """Usernames that may be in a room when it is private: its grantees and every admin."""
    granted = select(User.username).join(Grant, Grant.user_id == User.id).where(Grant.room_id == room_id)
    admins = select(User.username).where(User.is_admin.is_(True))
    return (await session.execute(granted.union(admins))).scalars().all()


async def rooms_open_to(session: AsyncSession, user_id: int) -> Sequence[str]:
    """Names of the rooms a non-admin may be in: public ones and those with a grant."""
    granted = select(Room.name).join(Grant, Grant.room_id == Room.id).where(Grant.user_id == user_id)
    public = select(Room.name).where(Room.public.is_(True))
    return (await session.execute(granted.union(public))).scalars().all()


async def rooms_with_grants(session: AsyncSession, user_id: int) -> Sequence[tuple[Room, str | None]]:
    """Every room with the user's granted role in it (None where there is no grant)."""
    rows = await session.execute(
        select(Room, Grant.role)
        .outerjoin(Grant, (Grant.room_id == Room.id) & (Grant.user_id == user_id))
        .order_by(Room.name)
    )
    return [(room, role) for room, role in rows.all()]


# Messages -------------------------------------------------------------------

_messages = cast(Table, Message.__table__)
_MESSAGE_COLUMNS = (_messages.c.id, _messages.c.username, _messages.c.body, _messages.c.created_at)


async def messages_page(
    session: AsyncSession, room_id: int, room: str, *, before_id: int | None, limit: int
) -> list[StoredMessage]:
    """Up to `limit` messages older than before_id (or the newest), oldest first."""
    query = select(*_MESSAGE_COLUMNS).where(_messages.c.room_id == room_id)
    if before_id is not None:
        query = query.where(_messages.c.id < before_id)
    rows = (await session.execute(query.order_by(_messages.c.id.desc()).limit(limit))).all()
    return [StoredMessage(i, room, u, b, ts) for i, u, b, ts in reversed(rows)]


async def messages_after(session: AsyncSession, room_id: int, room: str, after_id: int) -> list[StoredMessage]:
    """Every message of the room after after_id, oldest first."""
    query = select(*_MESSAGE_COLUMNS).where(_messages.c.room_id == room_id, _messages.c.id > after_id)
    rows = (await session.execute(query.order_by(_messages.c.id))).all()
    return [StoredMessage(i, room, u, b, ts) for i, u, b, ts in rows]


async def find_by_client_id(session: AsyncSession, username: str, client_id: str) -> StoredMessage | None:
    """The message a user already posted with this client_id, or None."""
    row = (
        await session.execute(
            select(Message.id, Room.name, Message.body, Message.created_at)
            .join(Room, Room.id == Message.room_id)
            .where(Message.username == username, Message.client_id == client_id)
        )
    ).first()
    return StoredMessage(row[0], row[1], username, row[2], row[3]) if row else None


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store: its room's id and name, author, text and optional client_id."""

    room_id: int
    room: str
    user: str
    msg: str
    client_id: str | None


async def store_messages(session: AsyncSession, batch: Sequence[NewMessage]) -> list[StoredMessage | None]:
    """Give each message its room's next ids and insert them all; the caller commits.

    Taking the ids with one UPDATE of every room in the batch serializes writers
    to a room in the database itself (a row lock on PostgreSQL, the write lock
    on SQLite), so ids stay gapless even with several processes. A message whose room is gone by
    now comes back as None and is not stored.
    """
    per_room: dict[int, int] = {}
    for item in batch:
        per_room[item.room_id] = per_room.get(item.room_id, 0) + 1
    rooms = cast(Table, Room.__table__)
    added = case(per_room, value=rooms.c.id)  # one statement for every room of the batch
    taken = await session.execute(
        update(rooms)
        .where(rooms.c.id.in_(list(per_room)))
        .values(last_message_id=rooms.c.last_message_id + added)
        .returning(rooms.c.id, rooms.c.last_message_id)
    )
    next_id = {room_id: last - per_room[room_id] + 1 for room_id, last in taken.all()}
    now = utcnow()
    stored: list[StoredMessage | None] = []
    rows: list[dict[str, object]] = []
    for item in batch:
        if item.room_id not in next_id:
            stored.append(None)
            continue
        message_id = next_id[item.room_id]
        next_id[item.room_id] += 1
        rows.append(
            {"room_id": item.room_id, "id": message_id, "username": item.user,
             "body": item.msg, "client_id": item.client_id, "created_at": now}
        )
        stored.append(StoredMessage(message_id, item.room, item.user, item.msg, now))
    if rows:
        await session.execute(insert(cast(Table, Message.__table__)), rows)
    return stored


# Refresh tokens ---------------------------------------------------------------

async def get_refresh_token(session: AsyncSession, token_hash: str) -> RefreshToken | None:
    """The refresh token row of that hash, or None."""
    return (
        await session.execute(select(RefreshToken).where(RefreshToken.token_hash == token_hash))
    ).scalar_one_or_none()


async def spend_refresh_token(session: AsyncSession, token_id: int) -> bool:
    """Mark a refresh token used, only if nobody did first; True when this call did."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None), RefreshToken.revoked.is_(False))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def revoke_family(session: AsyncSession, family: str) -> None:
    """Revoke every refresh token of a family."""
    await session.execute(update(RefreshToken).where(RefreshToken.family == family).values(revoked=True))


async def revoke_user_tokens(session: AsyncSession, user_id: int) -> None:
    """Revoke every refresh token of a user."""
    await session.execute(update(RefreshToken).where(RefreshToken.user_id == user_id).values(revoked=True))


async def purge_expired_tokens(session: AsyncSession) -> None:
    """Delete refresh tokens that have expired."""
    await session.execute(delete(RefreshToken).where(RefreshToken.expires_at < utcnow()))


# Audit ------------------------------------------------------------------------

def audit(session: AsyncSession, actor: str, action: str, target: str) -> None:
    """Add an audit entry to the session's transaction."""
    session.add(AuditEntry(actor=actor, action=action, target=target))


async def audit_entries(session: AsyncSession, limit: int) -> Sequence[AuditEntry]:
    """The newest audit entries, newest first."""
    return (await session.execute(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))).scalars().all()
