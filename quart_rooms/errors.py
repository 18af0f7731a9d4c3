"""One error family: a code, an HTTP status and a message, rendered for HTTP and for acks."""

from __future__ import annotations

import math
from typing import Any


class AppError(Exception):
    """An error a client is told about: `code` for programs, `message` for people."""

    code = "bad_request"
    status = 400
    default_message = "The request is not valid."

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        self.message = message or self.default_message
        self.retry_after = retry_after  # seconds (contract 1.1: "Errors say when to retry")
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        """The JSON body of the HTTP error reply."""
        return {"error": {"code": self.code, "message": self.message}}

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers of the error reply: Retry-After in whole seconds (RFC 9110 section 10.2.3)."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}

    def ack(self) -> dict[str, Any]:
        """The Socket.IO acknowledgement for this error, with `retry_after` in seconds when known."""
        ack: dict[str, Any] = {"ok": False, "error": self.code, "message": self.message}
        if self.retry_after is not None:
            ack["retry_after"] = round(self.retry_after, 3)
        return ack


class BadRequest(AppError):
    code, status, default_message = "bad_request", 400, "The request is not valid."


class InvalidCredentials(AppError):
    code, status, default_message = "invalid_credentials", 401, "Wrong username or password."


class Unauthorized(AppError):
    code, status, default_message = "unauthorized", 401, "Sign in first: the token is missing or not valid."


class TokenExpired(AppError):
    code, status, default_message = "token_expired", 401, "The token has expired."


class Forbidden(AppError):
    code, status, default_message = "forbidden", 403, "You may not do that."


class NotFound(AppError):
    code, status, default_message = "not_found", 404, "No such thing."


class NoSuchRoom(AppError):
    code, status, default_message = "no_such_room", 404, "No such room."


class Conflict(AppError):
    code, status, default_message = "conflict", 409, "That already exists."


class PayloadTooLarge(AppError):
    code, status, default_message = "payload_too_large", 413, "The request body is too large."


class TooLarge(AppError):
    code, status, default_message = "too_large", 413, "The message is too long."


class NotInRoom(AppError):
    code, status, default_message = "not_in_room", 409, "Join the room first."


class RateLimited(AppError):
    code, status, default_message = "rate_limited", 429, "Too many requests; try again later."


class Unavailable(AppError):
    code, status, default_message = "unavailable", 503, "The server cannot answer right now."
