"""Request and reply shapes of the HTTP API (validated by Quart-Schema, shown in OpenAPI)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from quart_rooms.auth.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS
from quart_rooms.names import (
    MAX_ID,
    ROOM_PATTERN,
    ROOM_RE,
    USERNAME_PATTERN,
    USERNAME_RE,
    storable,
)

__all__ = ["MAX_ID"]


def _matches(pattern: re.Pattern[str], rule: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(rule)
        return value

    return AfterValidator(check)


# Checked with Python's re (the rule has a look-ahead); documented with the same pattern.
Username = Annotated[
    str,
    _matches(USERNAME_RE, "must be 1-32 characters of A-Z a-z 0-9 _ . - and not dots alone"),
    WithJsonSchema({"type": "string", "pattern": USERNAME_PATTERN, "minLength": 1, "maxLength": 32}),
]
RoomName = Annotated[
    str,
    _matches(ROOM_RE, "must be 1-64 characters of A-Z a-z 0-9 _ . - and not dots alone"),
    WithJsonSchema({"type": "string", "pattern": ROOM_PATTERN, "minLength": 1, "maxLength": 64}),
]
Password = Annotated[str, StringConstraints(min_length=MIN_PASSWORD_CHARS, max_length=MAX_PASSWORD_CHARS)]
Title = Annotated[str, StringConstraints(max_length=200)]
Role = Literal["read", "write", "moderate"]


class Strict(BaseModel):
    """A body with unknown fields refused, and no text a database cannot store (contract 1.1)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: object) -> object:
        if isinstance(value, str) and not storable(value):
            raise ValueError("may not contain NUL or unpaired surrogate characters")
        return value


class Login(Strict):
    username: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PASSWORD_CHARS)]


class Refresh(Strict):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


class TokenReply(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    refresh_token: str


class Me(BaseModel):
    username: str
    is_admin: bool


class RoomForUser(BaseModel):
    name: str
    title: str | None
    public: bool
    role: Role


class RoomsForUser(BaseModel):
    rooms: list[RoomForUser]


class MessagesQuery(BaseModel):
    """Either before_id (older than it, or the newest) or after_id (newer than it), oldest first."""

    model_config = ConfigDict(extra="forbid")
    before_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    after_id: int | None = Field(default=None, ge=0, le=MAX_ID)
    limit: int = Field(default=50, ge=1, le=200)


class MessageOut(BaseModel):
    """A message (contract, "Socket.IO": `{id, room, user, msg, ts}`)."""

    id: int
    room: str
    user: str
    msg: str
    ts: str


class TombstoneOut(BaseModel):
    """A deleted message (contract 1.1, "Moderation"): no text, `deleted: true`."""

    id: int
    room: str
    user: str
    ts: str
    deleted: Literal[True]


class Messages(BaseModel):
    messages: list[MessageOut | TombstoneOut]


class NewUser(Strict):
    username: Username
    password: Password
    is_admin: bool = False


class UserChange(Strict):
    password: Password | None = None
    is_admin: bool | None = None
    disabled: bool | None = None


class UserOut(BaseModel):
    username: str
    is_admin: bool
    disabled: bool


class Users(BaseModel):
    users: list[UserOut]


class NewRoom(Strict):
    name: RoomName
    title: Title | None = None
    public: bool = False


class RoomChange(Strict):
    title: Title | None = None
    public: bool | None = None


class RoomOut(BaseModel):
    name: str
    title: str | None
    public: bool


class Rooms(BaseModel):
    rooms: list[RoomOut]


class GrantIn(Strict):
    role: Role


class GrantOut(BaseModel):
    room: str
    username: str
    role: Role


class GrantRow(BaseModel):
    username: str
    role: Role


class Grants(BaseModel):
    grants: list[GrantRow]


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=500)


class AuditOut(BaseModel):
    id: int
    ts: str
    actor: str
    action: str
    target: str


class Audit(BaseModel):
    entries: list[AuditOut]
