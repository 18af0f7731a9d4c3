"""The signed-in user's routes: who am I, which rooms, a room's history."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import validate_querystring, validate_response

from quart_rooms.api.schemas import Me, Messages, MessagesQuery, RoomsForUser
from quart_rooms.auth.http import current_user, login_required, services

blueprint = Blueprint("rooms", __name__, url_prefix="/api")


@blueprint.get("/me")
@login_required
@validate_response(Me)
async def me() -> dict[str, Any]:
    """The caller's account."""
    user = await current_user()
    return {"username": user.username, "is_admin": user.is_admin}


@blueprint.get("/rooms")
@login_required
@validate_response(RoomsForUser)
async def rooms() -> dict[str, Any]:
    """Only the rooms the caller may join, with the caller's role in each."""
    found = await services().access.joinable(await current_user())
    return {"rooms": [{"name": r.room, "title": r.title, "public": r.public, "role": r.role} for r in found]}


@blueprint.get("/rooms/<room>/messages")
@login_required
@validate_querystring(MessagesQuery)
@validate_response(Messages)
async def messages(room: str, query_args: MessagesQuery) -> dict[str, Any]:
    """A page of the room's history, oldest first (read role at least)."""
    page = await services().chat.page(
        await current_user(), room, before_id=query_args.before_id, limit=query_args.limit
    )
    return {"messages": [m.as_dict() for m in page]}
