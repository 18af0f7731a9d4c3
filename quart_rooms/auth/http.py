"""The signed-in user of an HTTP request, from its bearer token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar, cast

from quart import current_app, g, request

from quart_rooms.access import Principal
from quart_rooms.auth.tokens import bearer_token
from quart_rooms.errors import Forbidden, Unauthorized
from quart_rooms.services import Services

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def services() -> Services:
    """The running app's services."""
    return cast(Services, current_app.extensions["quart_rooms"])


async def current_user() -> Principal:
    """The active account behind the request's access token; raises Unauthorized."""
    if "user" not in g:
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise Unauthorized()
        claims = services().tokens.verify(token)
        g.user = await services().access.authenticate(claims.uid, claims.ver, claims.sid)
    return cast(Principal, g.user)


def login_required(view: F) -> F:
    """Only signed-in, active users reach the view."""

    @wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        await current_user()
        return await view(*args, **kwargs)

    return cast(F, wrapper)


def admin_required(view: F) -> F:
    """Only signed-in admins reach the view."""

    @wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not (await current_user()).is_admin:
            raise Forbidden("Only admins may do that.")
        return await view(*args, **kwargs)

    return cast(F, wrapper)
