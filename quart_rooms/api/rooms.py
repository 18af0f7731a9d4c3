"""The signed-in user's routes: who am I, which rooms, a room's history, grants and deletions."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from quart import Blueprint, Response
from quart_schema import (
    document_response,
    operation_id,
    tag_blueprint,
    validate_querystring,
    validate_request,
    validate_response,
)

from quart_rooms.api.openapi import errors, no_content
from quart_rooms.api.schemas import (
    GrantIn,
    GrantOut,
    Grants,
    Me,
    Messages,
    MessagesQuery,
    RoomsForUser,
)
from quart_rooms.auth.http import current_user, login_required, services
from quart_rooms.errors import BadRequest
from quart_rooms.names import check_room_name, is_id

blueprint = Blueprint("rooms", __name__, url_prefix="/api")
tag_blueprint(blueprint, ["rooms"])


@blueprint.get("/me")
@errors(401)
@login_required
@validate_response(Me)
async def me() -> dict[str, Any]:
    """The caller's account."""
    user = await current_user()
    return {"username": user.username, "is_admin": user.is_admin}


@blueprint.get("/rooms")
@errors(401)
@login_required
@document_response(RoomsForUser)
async def rooms() -> Response:
    """Only the rooms the caller may join, with the caller's role in each (RoomsForUser).

    Every page asks for this after each reconnect, and a server may hold
    thousands of rooms: each room's JSON is encoded once and reused (the reply
    is built from those pieces, not validated again), which made this route
    ten times cheaper (docs/benchmarks.md, reconnect storm).
    """
    found = await services().access.joinable(await current_user())
    body = '{"rooms":[' + ",".join([_room_json(r.room, r.title, r.public, r.role) for r in found]) + "]}"
    return Response(body, content_type="application/json")


@lru_cache(maxsize=100_000)
def _room_json(name: str, title: str | None, public: bool, role: str) -> str:
    """One RoomForUser object as JSON."""
    return json.dumps({"name": name, "title": title, "public": public, "role": role}, separators=(",", ":"))


@blueprint.get("/rooms/<room>/messages")
@errors(400, 401, 403, 404)
@login_required
@validate_querystring(MessagesQuery)
@validate_response(Messages)
async def messages(room: str, query_args: MessagesQuery) -> dict[str, Any]:
    """A page of the room's history, oldest first (read role at least): before before_id, or after after_id."""
    if query_args.before_id is not None and query_args.after_id is not None:
        raise BadRequest("Give before_id or after_id, not both.")
    page = await services().chat.page(
        await current_user(), check_room_name(room),
        before_id=query_args.before_id, after_id=query_args.after_id, limit=query_args.limit,
    )
    return {"messages": [m.as_dict() for m in page]}


@blueprint.delete("/rooms/<room>/messages/<message_id>")
@operation_id("message")
@errors(400, 401, 403, 404)
@no_content
@login_required
async def delete_message(room: str, message_id: str) -> Response:
    """Replace a message by its tombstone (its author, a moderator of the room, or an admin)."""
    number = int(message_id) if message_id.isdigit() and len(message_id) <= 19 else -1
    if not is_id(number):
        raise BadRequest("The message id must be a whole number.")
    await services().chat.delete(await current_user(), check_room_name(room), number)
    return Response(status=204)


@blueprint.get("/rooms/<room>/grants")
@operation_id("room_grants")
@errors(400, 401, 403, 404)
@login_required
@validate_response(Grants)
async def grants(room: str) -> dict[str, Any]:
    """Every grant in a room, for anyone who may read it (the page's member list)."""
    svc = services()
    found = await svc.access.require(await current_user(), check_room_name(room), "read")
    return {"grants": [{"username": u, "role": r} for u, r in await svc.admin.grants(found.room)]}


@blueprint.put("/rooms/<room>/grants/<username>")
@operation_id("room_grant")
@errors(400, 401, 403, 404, 413)
@login_required
@validate_request(GrantIn)
@validate_response(GrantOut)
async def put_grant(room: str, username: str, data: GrantIn) -> dict[str, Any]:
    """A moderator of the room (or an admin) gives or changes a read or write grant."""
    user = await current_user()
    found = await services().access.require_moderator(user, check_room_name(room))
    grant = await services().admin.put_grant(user, found.room, username, data.role)
    return {"room": grant.room, "username": grant.username, "role": grant.role}


@blueprint.delete("/rooms/<room>/grants/<username>")
@operation_id("room_grant")
@errors(400, 401, 403, 404)
@no_content
@login_required
async def delete_grant(room: str, username: str) -> Response:
    """A moderator of the room (or an admin) takes a read or write grant away; the user is kicked at once."""
    user = await current_user()
    found = await services().access.require_moderator(user, check_room_name(room))
    await services().admin.delete_grant(user, found.room, username)
    return Response(status=204)
