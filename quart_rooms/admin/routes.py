"""The admin HTTP API: thin routes over the admin use cases."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response
from quart_schema import (
    operation_id,
    tag_blueprint,
    validate_querystring,
    validate_request,
    validate_response,
)

from quart_rooms.admin.service import Admin
from quart_rooms.api.openapi import errors, no_content
from quart_rooms.api.schemas import (
    Audit,
    AuditQuery,
    GrantIn,
    GrantOut,
    Grants,
    NewRoom,
    NewUser,
    RoomChange,
    RoomOut,
    Rooms,
    UserChange,
    UserOut,
    Users,
)
from quart_rooms.auth.http import admin_required, current_user, services
from quart_rooms.errors import BadRequest
from quart_rooms.storage.models import Room, User, isoformat

blueprint = Blueprint("admin", __name__, url_prefix="/api/admin")
tag_blueprint(blueprint, ["admin"])


def _admin() -> Admin:
    return services().admin


async def _actor() -> str:
    return (await current_user()).username


def _user(user: User) -> dict[str, Any]:
    return {"username": user.username, "is_admin": user.is_admin, "disabled": user.disabled}


def _room(room: Room) -> dict[str, Any]:
    return {"name": room.name, "title": room.title, "public": room.public}


def _no_content() -> Response:
    return Response(status=204)


@blueprint.post("/users")
@operation_id("admin_user")
@errors(400, 401, 403, 409, 413, 429)
@admin_required
@validate_request(NewUser)
@validate_response(UserOut, 201)
async def create_user(data: NewUser) -> tuple[dict[str, Any], int]:
    """Create an account."""
    user = await _admin().create_user(await _actor(), data.username, data.password, is_admin=data.is_admin)
    return _user(user), 201


@blueprint.get("/users")
@operation_id("admin_users")
@errors(401, 403)
@admin_required
@validate_response(Users)
async def list_users() -> dict[str, Any]:
    """Every account."""
    return {"users": [_user(u) for u in await _admin().users()]}


@blueprint.patch("/users/<username>")
@operation_id("admin_user")
@errors(400, 401, 403, 404, 409, 413, 429)
@admin_required
@validate_request(UserChange)
@validate_response(UserOut)
async def update_user(username: str, data: UserChange) -> dict[str, Any]:
    """Change a password, the admin flag or the disabled flag; disabling disconnects at once."""
    if data.password is None and data.is_admin is None and data.disabled is None:
        raise BadRequest("Give at least one of password, is_admin, disabled.")
    user = await _admin().update_user(
        await _actor(), username, password=data.password, is_admin=data.is_admin, disabled=data.disabled
    )
    return _user(user)


@blueprint.delete("/users/<username>")
@operation_id("admin_user")
@errors(400, 401, 403, 404, 409)
@no_content
@admin_required
async def delete_user(username: str) -> Response:
    """Delete an account and disconnect its sockets."""
    await _admin().delete_user(await _actor(), username)
    return _no_content()


@blueprint.post("/rooms")
@operation_id("admin_room")
@errors(400, 401, 403, 409, 413)
@admin_required
@validate_request(NewRoom)
@validate_response(RoomOut, 201)
async def create_room(data: NewRoom) -> tuple[dict[str, Any], int]:
    """Create a room."""
    room = await _admin().create_room(await _actor(), data.name, title=data.title, public=data.public)
    return _room(room), 201


@blueprint.get("/rooms")
@operation_id("admin_rooms")
@errors(401, 403)
@admin_required
@validate_response(Rooms)
async def list_rooms() -> dict[str, Any]:
    """Every room."""
    return {"rooms": [_room(r) for r in await _admin().rooms()]}


@blueprint.patch("/rooms/<room>")
@operation_id("admin_room")
@errors(400, 401, 403, 404, 413)
@admin_required
@validate_request(RoomChange)
@validate_response(RoomOut)
async def update_room(room: str, data: RoomChange) -> dict[str, Any]:
    """Change a room's title or make it public or private; members without a grant are kicked."""
    if data.title is None and data.public is None:
        raise BadRequest("Give at least one of title, public.")
    changed = await _admin().update_room(await _actor(), room, title=data.title, public=data.public)
    return _room(changed)


@blueprint.delete("/rooms/<room>")
@operation_id("admin_room")
@errors(400, 401, 403, 404)
@no_content
@admin_required
async def delete_room(room: str) -> Response:
    """Delete a room; every socket in it is kicked."""
    await _admin().delete_room(await _actor(), room)
    return _no_content()


@blueprint.put("/rooms/<room>/grants/<username>")
@operation_id("admin_grant")
@errors(400, 401, 403, 404, 413)
@admin_required
@validate_request(GrantIn)
@validate_response(GrantOut)
async def put_grant(room: str, username: str, data: GrantIn) -> dict[str, Any]:
    """Give a user a role in a room, or change it."""
    grant = await _admin().put_grant(await current_user(), room, username, data.role)
    return {"room": grant.room, "username": grant.username, "role": grant.role}


@blueprint.delete("/rooms/<room>/grants/<username>")
@operation_id("admin_grant")
@errors(400, 401, 403, 404)
@no_content
@admin_required
async def delete_grant(room: str, username: str) -> Response:
    """Revoke a grant; the user's sockets leave the room at once and get `kicked`."""
    await _admin().delete_grant(await current_user(), room, username)
    return _no_content()


@blueprint.get("/rooms/<room>/grants")
@operation_id("admin_grants")
@errors(400, 401, 403, 404)
@admin_required
@validate_response(Grants)
async def list_grants(room: str) -> dict[str, Any]:
    """Every grant in a room."""
    return {"grants": [{"username": u, "role": r} for u, r in await _admin().grants(room)]}


@blueprint.get("/audit")
@operation_id("admin_audit")
@errors(400, 401, 403)
@admin_required
@validate_querystring(AuditQuery)
@validate_response(Audit)
async def audit(query_args: AuditQuery) -> dict[str, Any]:
    """The audit log, newest first."""
    entries = await _admin().audit(query_args.limit)
    return {
        "entries": [
            {"id": e.id, "ts": isoformat(e.ts), "actor": e.actor,
             "action": e.action, "target": e.target}
            for e in entries
        ]
    }
