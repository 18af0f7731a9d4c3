"""Queries: every read and write of the tables goes through here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, case, delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from quart_rooms.storage.models import (
    AuditEntry,
    Change,
    ChangeHead,
    Grant,
    Message,
    RefreshToken,
    Room,
    User,
    isoformat,
    utcnow,
)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as clients see it; a deleted one is a tombstone with no text."""

    id: int
    room: str
    user: str
    msg: str
    ts: datetime
    deleted: bool = False

    def as_dict(self) -> dict[str, object]:
        """The contract's message object, or its tombstone `{id, room, user, ts, deleted: true}`."""
        if self.deleted:
            return {"id": self.id, "room": self.room, "user": self.user, "ts": isoformat(self.ts), "deleted": True}
        return {"id": self.id, "room": self.room, "user": self.user, "msg": self.msg, "ts": isoformat(self.ts)}

    def tombstone(self) -> StoredMessage:
        """The same message deleted."""
        return StoredMessage(self.id, self.room, self.user, "", self.ts, True)


# Users ----------------------------------------------------------------------

async def get_user(session: AsyncSession, username: str) -> User | None:
    """The user of that name in any case, or None (contract 1.1: lookups ignore case)."""
    query = select(User).where(func.lower(User.username) == username.lower())
    return (await session.execute(query)).scalar_one_or_none()


async def get_user_by_id(session: AsyncSession, user_id: int) -> User | None:
    """The user of that id, or None."""
    return await session.get(User, user_id)


async def set_password_hash(session: AsyncSession, user_id: int, password_hash: str) -> None:
    """Store a new hash of the same password (stronger parameters); tokens stay valid."""
    await session.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))


async def list_users(session: AsyncSession) -> Sequence[User]:
    """Every user, by name."""
    return (await session.execute(select(User).order_by(User.username))).scalars().all()


async def count_users(session: AsyncSession) -> int:
    """How many accounts exist."""
    return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


# Rooms and grants -------------------------------------------------------------

async def get_room(session: AsyncSession, name: str) -> Room | None:
    """The room of that name in any case, or None (contract 1.1: lookups ignore case)."""
    return (await session.execute(select(Room).where(func.lower(Room.name) == name.lower()))).scalar_one_or_none()


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


async def grants_in_room(session: AsyncSession, room_id: int, user_ids: Sequence[int]) -> dict[int, str]:
    """{user id: role} of the given users' grants in one room."""
    rows = await session.execute(
        select(Grant.user_id, Grant.role).where(Grant.room_id == room_id, Grant.user_id.in_(user_ids))
    )
    return {user_id: role for user_id, role in rows.all()}


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
_rooms = cast(Table, Room.__table__)
_MESSAGE_COLUMNS = (_messages.c.id, _messages.c.username, _messages.c.body, _messages.c.created_at, _messages.c.deleted)


def _message(room: str, row: Row[Any, Any, Any, Any, Any]) -> StoredMessage:
    return StoredMessage(row[0], room, row[1], row[2], row[3], bool(row[4]))


async def messages_page(
    session: AsyncSession, room_id: int, room: str, *, before_id: int | None, limit: int
) -> list[StoredMessage]:
    """Up to `limit` messages older than before_id (or the newest), oldest first."""
    query = select(*_MESSAGE_COLUMNS).where(_messages.c.room_id == room_id)
    if before_id is not None:
        query = query.where(_messages.c.id < before_id)
    rows = (await session.execute(query.order_by(_messages.c.id.desc()).limit(limit))).all()
    return [_message(room, row) for row in reversed(rows)]


async def messages_after(
    session: AsyncSession, room_id: int, room: str, after_id: int, *, upto: int | None = None, limit: int | None = None
) -> list[StoredMessage]:
    """Messages of the room after after_id (up to id `upto`, at most `limit`), oldest first."""
    query = select(*_MESSAGE_COLUMNS).where(_messages.c.room_id == room_id, _messages.c.id > after_id)
    if upto is not None:
        query = query.where(_messages.c.id <= upto)
    query = query.order_by(_messages.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [_message(room, row) for row in (await session.execute(query)).all()]


async def last_message_ids(session: AsyncSession, room_ids: Sequence[int]) -> dict[int, int]:
    """{room id: id of its newest message} for the rooms that still exist."""
    rows = await session.execute(select(_rooms.c.id, _rooms.c.last_message_id).where(_rooms.c.id.in_(room_ids)))
    return {room_id: last for room_id, last in rows.all()}


async def delete_message(session: AsyncSession, room_id: int, message_id: int) -> str | None:
    """Make a message a tombstone (its text gone); its author's name, or None for an unknown id."""
    row = (
        await session.execute(
            update(_messages)
            .where(_messages.c.room_id == room_id, _messages.c.id == message_id)
            .values(body="", deleted=True)
            .returning(_messages.c.username)
        )
    ).first()
    return str(row[0]) if row else None


async def message_author(session: AsyncSession, room_id: int, message_id: int) -> tuple[int | None, str, bool] | None:
    """(author's account id, author's name, deleted) of a message, or None for an unknown id."""
    row = (
        await session.execute(
            select(_messages.c.author_id, _messages.c.username, _messages.c.deleted).where(
                _messages.c.room_id == room_id, _messages.c.id == message_id
            )
        )
    ).first()
    return (row[0], str(row[1]), bool(row[2])) if row else None


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store: its room's id and name, author, text and optional client_id."""

    room_id: int
    room: str
    user: str
    msg: str
    client_id: str | None
    author_id: int = 0  # the author's account


class ClientIdRace(Exception):
    """Another transaction stored one of the batch's client_ids first: roll back and store again."""


async def _earlier_by_client_id(session: AsyncSession, batch: Sequence[NewMessage]) -> dict[tuple[int, str], StoredMessage]:
    """{(author id, client_id): stored message} for the batch's client_ids that are stored already."""
    keys = {(item.author_id, item.client_id) for item in batch if item.client_id is not None}
    if not keys:
        return {}
    query = (
        select(_messages.c.author_id, _messages.c.client_id, _messages.c.id, _rooms.c.name, _messages.c.username,
               _messages.c.body, _messages.c.created_at, _messages.c.deleted)
        .join(_rooms, _rooms.c.id == _messages.c.room_id)
        .where(tuple_(_messages.c.author_id, _messages.c.client_id).in_(list(keys)))
    )
    return {
        (author_id, client_id): StoredMessage(message_id, room, user, body, ts, bool(deleted))
        for author_id, client_id, message_id, room, user, body, ts, deleted in (await session.execute(query)).all()
    }


async def store_messages(
    session: AsyncSession, batch: Sequence[NewMessage]
) -> list[tuple[StoredMessage | None, bool]]:
    """Give each new message its room's next id and insert them all; the caller commits.

    Returns, per item, (message, new): the stored message (new); the message
    stored earlier with the same (user, client_id), which is not stored again
    (not new); or (None, False) when the room is gone. Taking the ids with one UPDATE of every room in the batch serializes
    writers to a room in the database itself (a row lock on PostgreSQL, the
    write lock on SQLite), so ids stay gapless and commit in id order even
    with several processes. Raises ClientIdRace when a concurrent transaction
    stored one of the client_ids after it was looked up; nothing is then
    inserted, and a retry in a new transaction answers it from storage.
    """
    earlier = await _earlier_by_client_id(session, batch)
    fresh: list[NewMessage] = []  # new text: no stored message has its client_id, nor an earlier item
    repeats: set[tuple[int, str]] = set()
    for item in batch:
        if item.client_id is not None:
            key = (item.author_id, item.client_id)
            if key in earlier or key in repeats:
                continue
            repeats.add(key)
        fresh.append(item)
    per_room: dict[int, int] = {}
    for item in fresh:
        per_room[item.room_id] = per_room.get(item.room_id, 0) + 1
    next_id: dict[int, int] = {}
    if per_room:
        added = case(per_room, value=_rooms.c.id)  # one statement for every room of the batch
        taken = await session.execute(
            update(_rooms)
            .where(_rooms.c.id.in_(list(per_room)))
            .values(last_message_id=_rooms.c.last_message_id + added)
            .returning(_rooms.c.id, _rooms.c.last_message_id)
        )
        next_id = {room_id: last - per_room[room_id] + 1 for room_id, last in taken.all()}
    now = utcnow()
    stored: list[tuple[StoredMessage | None, bool]] = []
    rows: list[dict[str, object]] = []
    for item in batch:
        key = (item.author_id, item.client_id or "")
        if item.client_id is not None and key in earlier:
            stored.append((earlier[key], False))
            continue
        if item.room_id not in next_id:
            stored.append((None, False))
            continue
        message = StoredMessage(next_id[item.room_id], item.room, item.user, item.msg, now)
        next_id[item.room_id] += 1
        rows.append(
            {"room_id": item.room_id, "id": message.id, "username": item.user, "author_id": item.author_id,
             "body": item.msg, "client_id": item.client_id, "created_at": now, "deleted": False}
        )
        if item.client_id is not None:
            earlier[key] = message
        stored.append((message, True))
    if rows:
        insert_rows = _insert_ignoring_client_id_conflicts(session)
        inserted = (await session.execute(insert_rows.returning(_messages.c.id), rows)).all()
        if len(inserted) != len(rows):
            raise ClientIdRace()
    return stored


def _insert_ignoring_client_id_conflicts(session: AsyncSession) -> Any:
    """INSERT ... ON CONFLICT (author_id, client_id) DO NOTHING, in the session's dialect."""
    dialect = session.get_bind().dialect.name
    insert_of = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert_of(_messages).on_conflict_do_nothing(index_elements=["author_id", "client_id"])


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


async def session_ended(session: AsyncSession, family: str) -> bool:
    """True when the sign-in session (refresh-token family) was ended: signed out, or a reused token."""
    query = select(RefreshToken.id).where(RefreshToken.family == family, RefreshToken.revoked.is_(True)).limit(1)
    return (await session.execute(query)).first() is not None


async def session_owner(session: AsyncSession, family: str) -> tuple[int, str] | None:
    """(user id, username) of a sign-in session (refresh-token family), or None when unknown."""
    row = (
        await session.execute(
            select(User.id, User.username).join(RefreshToken, RefreshToken.user_id == User.id)
            .where(RefreshToken.family == family).limit(1)
        )
    ).first()
    return (int(row[0]), str(row[1])) if row else None


async def revoke_user_tokens(session: AsyncSession, user_id: int) -> None:
    """Revoke every refresh token of a user."""
    await session.execute(update(RefreshToken).where(RefreshToken.user_id == user_id).values(revoked=True))


async def purge_expired_tokens(session: AsyncSession) -> None:
    """Delete refresh tokens that have expired."""
    await session.execute(delete(RefreshToken).where(RefreshToken.expires_at < utcnow()))


# The admin-change log ------------------------------------------------------------

async def append_change(session: AsyncSession, kind: str, data: dict[str, Any]) -> int:
    """Add a change to the session's transaction and return its id.

    The id comes from the one row of change_head, whose update locks it until
    the commit: changes commit in id order, so a follower that has read up to
    id n has seen every change numbered n or less.
    """
    head = cast(Table, ChangeHead.__table__)
    change_id = int(
        (await session.execute(update(head).where(head.c.id == 1).values(last_id=head.c.last_id + 1)
                               .returning(head.c.last_id))).scalar_one()
    )
    session.add(Change(id=change_id, kind=kind, data=json.dumps(data, separators=(",", ":"))))
    return change_id


async def change_head(session: AsyncSession) -> tuple[int, str]:
    """(id of the newest committed change, 0 when there is none; the deployment's id)."""
    row = (await session.execute(select(ChangeHead.last_id, ChangeHead.deployment).where(ChangeHead.id == 1))).one()
    return int(row[0]), str(row[1])


async def changes_after(
    session: AsyncSession, position: int, limit: int = 500
) -> list[tuple[int, str, dict[str, Any], datetime]]:
    """(id, kind, data, time) of the changes after `position`, oldest first."""
    rows = await session.execute(
        select(Change.id, Change.kind, Change.data, Change.ts).where(Change.id > position).order_by(Change.id)
        .limit(limit)
    )
    return [(change_id, kind, json.loads(data), ts) for change_id, kind, data, ts in rows.all()]


# Audit ------------------------------------------------------------------------

def audit(session: AsyncSession, actor: str, action: str, target: str) -> None:
    """Add an audit entry to the session's transaction (listed in session.info["audit"] too)."""
    session.add(AuditEntry(actor=actor, action=action, target=target))
    session.info.setdefault("audit", []).append((actor, action, target))


async def audit_entries(session: AsyncSession, limit: int) -> Sequence[AuditEntry]:
    """The newest audit entries, newest first."""
    return (await session.execute(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))).scalars().all()
