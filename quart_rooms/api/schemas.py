"""Request and reply shapes of the HTTP API (validated by Quart-Schema, shown in OpenAPI)."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
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
# Free text may not hold NUL (nor unpaired surrogates, which JSON Schema cannot say): Strict checks it.
NO_NUL = Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})
Password = Annotated[str, StringConstraints(min_length=MIN_PASSWORD_CHARS, max_length=MAX_PASSWORD_CHARS), NO_NUL]
Title = Annotated[str, StringConstraints(max_length=200), NO_NUL]
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
    """A username (any case) and its password."""

    username: Annotated[str, StringConstraints(min_length=1, max_length=200), NO_NUL]
    password: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PASSWORD_CHARS), NO_NUL]


class Refresh(Strict):
    """A refresh token; without one (no body, or `{}`) the `quart_rooms_refresh` cookie is used."""

    body_required: ClassVar[bool] = False  # documented as an optional body (api/openapi.py)
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=200), NO_NUL] | None = None


class TokenReply(BaseModel):
    """Signed in: a bearer access token (`expires_in` seconds) and a refresh token for POST /api/auth/refresh."""

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    refresh_token: str


class Me(BaseModel):
    """The caller's account."""

    username: str
    is_admin: bool


class RoomForUser(BaseModel):
    """A room the caller may join, with the caller's role in it."""

    name: str
    title: str | None
    public: bool
    role: Role


class RoomsForUser(BaseModel):
    """The rooms the caller may join."""

    rooms: list[RoomForUser]


class MessagesQuery(BaseModel):
    """Either before_id (older than it, or the newest) or after_id (newer than it), oldest first."""

    model_config = ConfigDict(extra="forbid")
    before_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    after_id: int | None = Field(default=None, ge=0, le=MAX_ID)
    limit: int = Field(default=50, ge=1, le=200)


class MessageOut(BaseModel):
    """A message: `id` grows by one within a room (no gaps), `ts` is ISO-8601 UTC, `user` its author."""

    id: int
    room: str
    user: str
    msg: str
    ts: str


class TombstoneOut(BaseModel):
    """A deleted message (a tombstone): its id, author and time stay, its text is gone."""

    id: int
    room: str
    user: str
    ts: str
    deleted: Literal[True]


class Messages(BaseModel):
    """A page of history, oldest first: messages and tombstones of deleted ones."""

    messages: list[MessageOut | TombstoneOut]


class NewUser(Strict):
    username: Username
    password: Password
    is_admin: bool = False


class UserChange(Strict):
    """At least one change; a field that is missing or null stays as it is."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": [field], "properties": {field: {"not": {"type": "null"}}}}
        for field in ("password", "is_admin", "disabled")
    ]})
    password: Password | None = None
    is_admin: bool | None = None
    disabled: bool | None = None


class UserOut(BaseModel):
    """An account."""

    username: str
    is_admin: bool
    disabled: bool


class Users(BaseModel):
    """Every account."""

    users: list[UserOut]


class NewRoom(Strict):
    name: RoomName
    title: Title | None = None
    public: bool = False


class RoomChange(Strict):
    """At least one change; a field that is missing or null stays as it is, an empty title removes it."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": [field], "properties": {field: {"not": {"type": "null"}}}} for field in ("title", "public")
    ]})
    title: Title | None = None
    public: bool | None = None


class RoomOut(BaseModel):
    """A room."""

    name: str
    title: str | None
    public: bool


class Rooms(BaseModel):
    """Every room."""

    rooms: list[RoomOut]


class GrantIn(Strict):
    role: Role


class GrantOut(BaseModel):
    """The grant as it is now."""

    room: str
    username: str
    role: Role


class GrantRow(BaseModel):
    """One user's role in the room."""

    username: str
    role: Role


class Grants(BaseModel):
    """Every grant in the room."""

    grants: list[GrantRow]


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=500)


class AuditOut(BaseModel):
    """One audit entry: who did what to what (`target` as in `room:ops user:alice role:read`)."""

    id: int
    ts: str
    actor: str
    action: str
    target: str


class Audit(BaseModel):
    """Audit entries, newest first."""

    entries: list[AuditOut]


# Replies without a body, and error replies ---------------------------------------------


class NoContent(BaseModel):
    """Done; the reply has no body."""


class ErrorDetail(BaseModel):
    """What went wrong: `code` for programs (docs/api.md lists every code), `message` for people."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$", examples=["bad_request"])
    message: str


class Error(BaseModel):
    """The body of every error reply of the HTTP API."""

    error: ErrorDetail


class BadRequestReply(RootModel[Error]):
    """`bad_request`: malformed JSON, a wrong type, an unknown field, a name outside its rule, an empty change."""


class UnauthorizedReply(RootModel[Error]):
    """`unauthorized` (no token, or a bad, foreign or revoked one), `token_expired`, or at sign-in
    `invalid_credentials`."""


class ForbiddenReply(RootModel[Error]):
    """`forbidden`: the caller may not do this (also for rooms that do not exist, to non-admins)."""


class NotFoundReply(RootModel[Error]):
    """`not_found` (unknown user, room, grant or message; a path that is not a route) or `no_such_room`
    (an admin naming a room that does not exist)."""


class ConflictReply(RootModel[Error]):
    """`conflict`: the name is taken (regardless of case), or an admin would lock themselves out."""


class PayloadTooLargeReply(RootModel[Error]):
    """`payload_too_large`: the body is over `max_body_bytes`."""


class RateLimitedReply(RootModel[Error]):
    """`rate_limited`: wait the seconds in `Retry-After`, then try again."""


class RetryAfter(BaseModel):
    """The headers of a 429 reply."""

    retry_after: int = Field(ge=1, description="Seconds to wait before trying again.")


class SetsRefreshCookie(BaseModel):
    """The headers of a reply that sets (or clears) the page's refresh-token cookie."""

    set_cookie: str = Field(
        description="`quart_rooms_refresh=<refresh token>; HttpOnly; SameSite=Strict; Path=/api/auth` "
        "(cleared on sign-out)."
    )


class Health(BaseModel):
    """The process runs."""

    status: Literal["ok"]


class ReadyChecks(BaseModel):
    database: Literal["ok", "unavailable"]
    broker: Literal["ok", "unavailable"] | None = Field(default=None, description="Only when `redis_url` is set.")


class Ready(BaseModel):
    """Storage (and the broker, when configured) answer."""

    status: Literal["ok"]
    checks: ReadyChecks


class NotReady(BaseModel):
    """Storage or the broker does not answer."""

    status: Literal["unavailable"]
    checks: ReadyChecks


class Metrics(RootModel[str]):
    """The Prometheus text format."""

    media_type: ClassVar[str] = "text/plain"
