"""Access tokens (JWT) and rotating refresh tokens: the one verifier for HTTP and Socket.IO."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from quart_rooms.changes import ChangeLog, commit_change
from quart_rooms.errors import InvalidCredentials, RateLimited, TokenExpired, Unauthorized
from quart_rooms.names import is_id
from quart_rooms.settings import Settings, jwt_secret
from quart_rooms.storage import queries
from quart_rooms.storage.db import Database
from quart_rooms.storage.models import RefreshToken, User, utcnow

MAX_TOKEN_CHARS = 4096
REFRESH_RETRY_AFTER = 2.0  # seconds a refresh refused as busy is told to wait
REQUIRED_CLAIMS = ["sub", "iat", "nbf", "exp", "iss", "aud", "jti", "uid", "ver", "sid"]


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims of an access token.

    Registered claims (RFC 7519 section 4.1): `sub` (the username), `exp`, `jti`.
    Private claims tie the token to one account and one sign-in, so it
    outlives neither (contract 1.1): `uid` (the account's id), `ver` (the
    account's token version when the token was issued) and `sid` (the sign-in
    session: the refresh-token family, as OpenID Connect names it).
    """

    sub: str
    uid: int
    ver: int
    sid: str
    exp: int
    jti: str


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a successful sign-in or refresh returns."""

    access_token: str
    expires_in: int
    refresh_token: str

    def as_dict(self) -> dict[str, object]:
        """The contract's token reply."""
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None."""
    scheme, _, token = (header or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


class Tokens:
    """Issues and verifies access tokens, rotates refresh tokens, ends sign-in sessions; keys are loaded once."""

    def __init__(self, settings: Settings, db: Database | None = None, changes: ChangeLog | None = None) -> None:
        self.settings = settings
        self._db = db
        self._changes = changes
        self._rotating = 0  # refreshes under way in this process (max_pending_refreshes)
        self.algorithm = settings.jwt_algorithm
        if self.algorithm.startswith("HS"):
            self._signing_key: str | bytes = jwt_secret(settings)
            self._verify_key: str | bytes = self._signing_key
        else:
            self._signing_key = Path(settings.jwt_private_key_file).read_bytes()
            self._verify_key = Path(settings.jwt_public_key_file).read_bytes()

    def issue_access(self, user: User, session_id: str) -> tuple[str, int]:
        """A signed access token for the account in a sign-in session, and its lifetime in seconds."""
        now = int(time.time())
        ttl = self.settings.access_token_ttl
        claims = {
            "sub": user.username, "iat": now, "nbf": now, "exp": now + ttl,
            "iss": self.settings.jwt_issuer, "aud": self.settings.jwt_audience,
            "jti": uuid.uuid4().hex, "uid": user.id, "ver": user.token_version, "sid": session_id,
        }
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm), ttl

    def verify(self, token: str | None) -> Claims:
        """The claims of a valid access token; Unauthorized or TokenExpired otherwise.

        Only the signature, the pinned algorithm and the registered claims are
        checked here (RFC 7519 section 7.2); whether the account and its session
        are still live is `Access.authenticate`'s question.
        """
        if not token:
            raise Unauthorized()
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise Unauthorized("The token is not valid.")
        try:
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self.algorithm],
                issuer=self.settings.jwt_issuer,
                audience=self.settings.jwt_audience,
                options={"require": REQUIRED_CLAIMS},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired() from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The token is not valid.") from exc
        uid, ver, sid = claims["uid"], claims["ver"], claims["sid"]
        if not (isinstance(claims["sub"], str) and is_id(uid) and is_id(ver) and isinstance(sid, str)):
            raise Unauthorized("The token is not valid.")
        return Claims(sub=claims["sub"], uid=uid, ver=ver, sid=sid, exp=int(claims["exp"]), jti=str(claims["jti"]))

    async def issue_pair(self, session: AsyncSession, user: User, family: str | None = None) -> TokenPair:
        """A new access token and a new refresh token (in a new family unless given)."""
        raw = secrets.token_urlsafe(32)
        family = family or uuid.uuid4().hex
        session.add(
            RefreshToken(
                token_hash=_hash(raw),
                family=family,
                user_id=user.id,
                expires_at=utcnow() + timedelta(seconds=self.settings.refresh_token_ttl),
            )
        )
        access, ttl = self.issue_access(user, family)
        return TokenPair(access, ttl, raw)

    async def sign_in(self, checked: User, rehashed: str | None = None) -> TokenPair:
        """The first token pair of a new sign-in session, for an account whose password was just checked.

        The account is read again inside the write transaction: InvalidCredentials
        when it was deleted, disabled or given a new password since the check
        (contract 1.1, "Tokens outlive neither the account nor its password").
        `rehashed` replaces the stored hash (argon2 parameters that changed).
        """
        assert self._db is not None
        async with self._db.writes() as session:
            user = await queries.get_user_by_id(session, checked.id)
            if user is None or user.disabled or user.token_version != checked.token_version:
                raise InvalidCredentials()
            if rehashed is not None:
                await queries.set_password_hash(session, user.id, rehashed)
            pair = await self.issue_pair(session, user)
            await session.commit()
            return pair

    async def rotate(self, raw: str) -> TokenPair:
        """Exchange a refresh token for a new pair; reuse of a spent one ends its sign-in session.

        Raises Unauthorized (unknown, revoked or reused token; inactive account),
        TokenExpired, or RateLimited (retry_after in seconds) when
        `max_pending_refreshes` refreshes already wait for storage in this process.
        """
        if self._rotating >= self.settings.max_pending_refreshes:
            raise RateLimited("The server is busy renewing sessions; keep your token and try again shortly.",
                              retry_after=REFRESH_RETRY_AFTER)
        self._rotating += 1
        try:
            return await self._rotate(raw)
        finally:
            self._rotating -= 1

    async def _rotate(self, raw: str) -> TokenPair:
        assert self._db is not None
        async with self._db.writes() as session:
            row = await queries.get_refresh_token(session, _hash(raw))
            if row is None or row.revoked:
                raise Unauthorized("The refresh token is not valid.")
            if row.expires_at <= utcnow():
                raise TokenExpired("The refresh token has expired; sign in again.")
            user = await queries.get_user_by_id(session, row.user_id)
            if user is None or user.disabled:
                raise Unauthorized("The account is not active.")
            if row.used_at is None and await queries.spend_refresh_token(session, row.id):
                pair = await self.issue_pair(session, user, family=row.family)
                await session.commit()
                return pair
            # A spent token came back (or two refreshes raced): someone holds a copy.
            await self._end(session, user.id, user.username, row.family)
        raise Unauthorized("The refresh token was already used; sign in again.")

    async def sign_out(self, raw: str) -> None:
        """End the sign-in session of a refresh token; unknown tokens are ignored."""
        assert self._db is not None
        async with self._db.writes() as session:
            row = await queries.get_refresh_token(session, _hash(raw))
            if row is not None and not row.revoked:
                user = await queries.get_user_by_id(session, row.user_id)
                await self._end(session, row.user_id, user.username if user else "", row.family)

    async def end_session(self, family: str) -> None:
        """End a sign-in session by its id (an access token's `sid`)."""
        assert self._db is not None
        async with self._db.writes() as session:
            owner = await queries.session_owner(session, family)
            if owner is not None:
                await self._end(session, owner[0], owner[1], family)

    async def _end(self, session: AsyncSession, user_id: int, username: str, family: str) -> None:
        """Revoke the family and log the end, so every process closes the session's sockets."""
        assert self._changes is not None
        await queries.revoke_family(session, family)
        change_id = await queries.append_change(
            session, "session.end", {"user": username, "user_id": user_id, "sid": family}
        )
        await commit_change(session, self._changes, change_id)
