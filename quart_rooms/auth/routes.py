"""Sign-in routes: login, refresh (rotating), logout."""

from __future__ import annotations

from pydantic import ValidationError
from quart import Blueprint, Response, jsonify, request
from quart_schema import document_request, document_response, validate_request

from quart_rooms.api.schemas import Login, Refresh, TokenReply
from quart_rooms.auth.http import services
from quart_rooms.auth.passwords import hash_password, needs_rehash, verify_password
from quart_rooms.auth.tokens import TokenPair, bearer_token
from quart_rooms.errors import BadRequest, InvalidCredentials, Unauthorized
from quart_rooms.storage import queries

blueprint = Blueprint("auth", __name__, url_prefix="/api/auth")
REFRESH_COOKIE = "quart_rooms_refresh"


def _client_address() -> str:
    return request.remote_addr or "unknown"


def _token_reply(pair: TokenPair) -> Response:
    """The token JSON, with the refresh token also in an HttpOnly cookie for the page."""
    response = jsonify(pair.as_dict())
    response.set_cookie(
        REFRESH_COOKIE,
        pair.refresh_token,
        max_age=services().settings.refresh_token_ttl,
        path="/api/auth",
        httponly=True,
        secure=request.scheme == "https",
        samesite="Strict",
    )
    return response


@blueprint.post("/login")
@validate_request(Login)
@document_response(TokenReply)
async def login(data: Login) -> Response:
    """Exchange a username and password for an access and a refresh token."""
    svc = services()
    svc.throttle.check(data.username, _client_address())
    async with svc.sessions() as session:
        user = await queries.get_user(session, data.username)
        ok = verify_password(user.password_hash if user else None, data.password)
        if user is None or not ok or user.disabled:
            svc.throttle.failed(data.username, _client_address())
            raise InvalidCredentials()
        if needs_rehash(user.password_hash):
            user.password_hash = hash_password(data.password)
        pair = await svc.tokens.issue_pair(session, user)
        await session.commit()
    return _token_reply(pair)


def _refresh_token(data: Refresh | None) -> str | None:
    return (data.refresh_token if data else None) or request.cookies.get(REFRESH_COOKIE)


async def _optional_body() -> Refresh | None:
    """The body, when there is one: the page sends none and relies on the cookie."""
    raw = await request.get_data()
    if not raw.strip():
        return None
    body = await request.get_json(force=True)
    try:
        return Refresh.model_validate(body)
    except ValidationError as exc:
        raise BadRequest("refresh_token must be a string, and no other fields are allowed.") from exc


@blueprint.post("/refresh")
@document_request(Refresh)
@document_response(TokenReply)
async def refresh() -> Response:
    """Exchange a refresh token (body or cookie) for a new pair; the old one stops working."""
    token = _refresh_token(await _optional_body())
    if token is None:
        raise Unauthorized("A refresh token is needed.")
    svc = services()
    async with svc.sessions() as session:
        pair = await svc.tokens.rotate(session, token)
        await session.commit()
    return _token_reply(pair)


@blueprint.post("/logout")
@document_request(Refresh)
async def logout() -> Response:
    """Revoke the refresh token (body or cookie); needs it or a valid access token."""
    token = _refresh_token(await _optional_body())
    svc = services()
    if token is None:
        svc.tokens.verify(bearer_token(request.headers.get("Authorization")))
    else:
        async with svc.sessions() as session:
            await svc.tokens.revoke(session, token)
            await session.commit()
    response = Response(status=204)
    response.delete_cookie(REFRESH_COOKIE, path="/api/auth")
    return response
