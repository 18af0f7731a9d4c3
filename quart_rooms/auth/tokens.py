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

from quart_rooms.errors import TokenExpired, Unauthorized
from quart_rooms.settings import Settings, jwt_secret
from quart_rooms.storage import queries
from quart_rooms.storage.models import RefreshToken, User, utcnow

REQUIRED_CLAIMS = ["sub", "iat", "nbf", "exp", "iss", "aud", "jti"]


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims of an access token."""

    sub: str
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
    return hashlib.sha256(raw.encode()).hexdigest()


class Tokens:
    """Issues and verifies access tokens, and rotates refresh tokens; keys are loaded once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.algorithm = settings.jwt_algorithm
        if self.algorithm.startswith("HS"):
            self._signing_key: str | bytes = jwt_secret(settings)
            self._verify_key: str | bytes = self._signing_key
        else:
            self._signing_key = Path(settings.jwt_private_key_file).read_bytes()
            self._verify_key = Path(settings.jwt_public_key_file).read_bytes()

    def issue_access(self, username: str) -> tuple[str, int]:
        """A signed access token for the user, and its lifetime in seconds."""
        now = int(time.time())
        ttl = self.settings.access_token_ttl
        claims = {
            "sub": username, "iat": now, "nbf": now, "exp": now + ttl,
            "iss": self.settings.jwt_issuer, "aud": self.settings.jwt_audience,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm), ttl

    def verify(self, token: str | None) -> Claims:
        """The claims of a valid access token; Unauthorized or TokenExpired otherwise."""
        if not token:
            raise Unauthorized()
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
        if not isinstance(claims["sub"], str):
            raise Unauthorized("The token is not valid.")
        return Claims(sub=claims["sub"], exp=int(claims["exp"]), jti=str(claims["jti"]))

    async def issue_pair(self, session: AsyncSession, user: User, family: str | None = None) -> TokenPair:
        """A new access token and a new refresh token (in a new family unless given)."""
        raw = secrets.token_urlsafe(32)
        session.add(
            RefreshToken(
                token_hash=_hash(raw),
                family=family or uuid.uuid4().hex,
                user_id=user.id,
                expires_at=utcnow() + timedelta(seconds=self.settings.refresh_token_ttl),
            )
        )
        access, ttl = self.issue_access(user.username)
        return TokenPair(access, ttl, raw)

    async def rotate(self, session: AsyncSession, raw: str) -> TokenPair:
        """Exchange a refresh token for a new pair; reuse of a spent one revokes its family."""
        row = await queries.get_refresh_token(session, _hash(raw))
        if row is None or row.revoked:
            raise Unauthorized("The refresh token is not valid.")
        if row.used_at is not None:
            # A spent token came back: someone holds a copy. End the whole family.
            await queries.revoke_family(session, row.family)
            await session.commit()
            raise Unauthorized("The refresh token was already used; sign in again.")
        if row.expires_at <= utcnow():
            raise TokenExpired("The refresh token has expired; sign in again.")
        user = await queries.get_user_by_id(session, row.user_id)
        if user is None or user.disabled:
            raise Unauthorized("The account is not active.")
        family = row.family
        if not await queries.spend_refresh_token(session, row.id):
            # Another request spent it between our read and now: that is reuse too.
            await session.rollback()
            await queries.revoke_family(session, family)
            await session.commit()
            raise Unauthorized("The refresh token was already used; sign in again.")
        return await self.issue_pair(session, user, family=family)

    async def revoke(self, session: AsyncSession, raw: str) -> None:
        """Revoke the family of a refresh token (sign-out); unknown tokens are ignored."""
        row = await queries.get_refresh_token(session, _hash(raw))
        if row is not None:
            await queries.revoke_family(session, row.family)
