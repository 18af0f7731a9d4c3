"""Request and reply shapes of the HTTP API (validated by Quart-Schema, shown in OpenAPI)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from quart_rooms.auth.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS

MAX_ID = 2**63 - 1  # ids are 64-bit integers in storage
USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{1,32}$"
ROOM_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

Username = Annotated[str, StringConstraints(pattern=USERNAME_PATTERN)]
RoomName = Annotated[str, StringConstraints(pattern=ROOM_PATTERN)]
Password = Annotated[str, StringConstraints(min_length=MIN_PASSWORD_CHARS, max_length=MAX_PASSWORD_CHARS)]
Title = Annotated[str, StringConstraints(max_length=200)]


class Strict(BaseModel):
    """A body with unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


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
    role: Literal["read", "write"]


class RoomsForUser(BaseModel):
    rooms: list[RoomForUser]


class MessagesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    before_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    limit: int = Field(default=50, ge=1, le=200)


class MessageOut(BaseModel):
    id: int
    room: str
    user: str
    msg: str
    ts: str


class Messages(BaseModel):
    messages: list[MessageOut]


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
    role: Literal["read", "write"]


class GrantOut(BaseModel):
    room: str
    username: str
    role: Literal["read", "write"]


class GrantRow(BaseModel):
    username: str
    role: Literal["read", "write"]


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
