"""Sign-in routes: login, refresh (rotating), logout."""

from __future__ import annotations

import logging

from pydantic import ValidationError
from quart import Blueprint, Response, jsonify, request
from quart_schema import (
    document_request,
    document_response,
    tag_blueprint,
    validate_request,
)

from quart_rooms.api.errors import json_body
from quart_rooms.api.openapi import errors, public
from quart_rooms.api.schemas import (
    Login,
    NoContent,
    Refresh,
    SetsRefreshCookie,
    TokenReply,
)
from quart_rooms.auth.http import services
from quart_rooms.auth.passwords import needs_rehash
from quart_rooms.auth.tokens import TokenPair, bearer_token
from quart_rooms.errors import BadRequest, InvalidCredentials, RateLimited, Unauthorized
from quart_rooms.storage import queries
from quart_rooms.storage.models import User

log = logging.getLogger(__name__)
blueprint = Blueprint("auth", __name__, url_prefix="/api/auth")
tag_blueprint(blueprint, ["sign-in"])
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
@public
@validate_request(Login)
@errors(400, 401, 413, 429)
@document_response(TokenReply, 200, SetsRefreshCookie)
async def login(data: Login) -> Response:
    """Exchange a username (any case) and password for an access and a refresh token."""
    svc = services()
    address = _client_address()
    try:
        async with svc.throttle.attempt(data.username, address) as attempt:
            user = await _check_password(data, address)
            attempt.succeeded = True
    except RateLimited:
        svc.metrics.sign_ins.labels("throttled").inc()
        log.info("sign-in throttled: user=%r address=%s", data.username, address)
        raise
    except InvalidCredentials:
        svc.metrics.sign_ins.labels("failure").inc()
        log.info("sign-in failed: user=%r address=%s", data.username, address)
        raise
    # Hashing happens before the write transaction, which stays short.
    rehashed = await svc.passwords.hash(data.password) if needs_rehash(user.password_hash) else None
    pair = await svc.tokens.sign_in(user, rehashed)
    svc.metrics.sign_ins.labels("success").inc()
    log.info("sign-in: user=%s address=%s", user.username, address)
    return _token_reply(pair)


async def _check_password(data: Login, address: str) -> User:
    """The enabled account whose password this is; InvalidCredentials otherwise (same reply for all)."""
    svc = services()
    async with svc.db.reads() as session:
        user = await queries.get_user(session, data.username)
    ok = await svc.passwords.verify(user.password_hash if user else None, data.password)
    if user is None or not ok or user.disabled:
        raise InvalidCredentials()
    return user


def _refresh_token(data: Refresh | None) -> str | None:
    return (data.refresh_token if data else None) or request.cookies.get(REFRESH_COOKIE)


async def _optional_body() -> Refresh | None:
    """The body, when there is one: the page sends none and relies on the cookie."""
    raw = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    if not raw.strip():
        return None
    body = json_body(raw)  # BadRequest (400) unless UTF-8 JSON
    try:
        return Refresh.model_validate(body)
    except ValidationError as exc:
        raise BadRequest("refresh_token must be a string, and no other fields are allowed.") from exc


@blueprint.post("/refresh")
@public
@document_request(Refresh)
@errors(400, 401, 413, 429)
@document_response(TokenReply, 200, SetsRefreshCookie)
async def refresh() -> Response:
    """Exchange a refresh token (body or cookie) for a new pair; the old one stops working."""
    token = _refresh_token(await _optional_body())
    if token is None:
        raise Unauthorized("A refresh token is needed.")
    return _token_reply(await services().tasks.run(services().tokens.rotate(token)))


@blueprint.post("/logout")
@public
@document_request(Refresh)
@errors(400, 401, 413)
@document_response(NoContent, 204, SetsRefreshCookie)
async def logout() -> Response:
    """End the sign-in session of the refresh token (body or cookie) or of the access token.

    Contract 1.1: the session's refresh and access tokens stop working and its
    live sockets close, on every node.
    """
    token = _refresh_token(await _optional_body())
    svc = services()
    if token is None:
        claims = svc.tokens.verify(bearer_token(request.headers.get("Authorization")))
        await svc.tasks.run(svc.tokens.end_session(claims.sid))
    else:
        await svc.tasks.run(svc.tokens.sign_out(token))
    response = Response(status=204)
    response.delete_cookie(REFRESH_COOKIE, path="/api/auth")
    return response
