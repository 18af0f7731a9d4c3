"""The one renderer of HTTP errors: `{"error": {"code", "message"}}` with the right status.

Request bodies are decoded here too (`json_body`, `JsonRequest`), so that a
body that is not JSON is a 400 bad_request on every route, never a 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from quart import Quart, Request, Response, jsonify, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from quart_rooms.errors import AppError, BadRequest, PayloadTooLarge
from quart_rooms.storage.db import busy

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def json_body(raw: bytes) -> Any:
    """The JSON value of a request body, or BadRequest (400) when `raw` is not JSON text.

    JSON exchanged between systems is UTF-8 (RFC 8259 section 8.1), so other
    bytes are refused, as are text that does not parse and values nested too
    deeply for the parser. The type of the value is the caller's to check.
    """
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("The request body is not valid UTF-8.") from None
    except RecursionError:
        raise BadRequest("The request body is nested too deeply.") from None
    except ValueError:
        raise BadRequest("The request body is not valid JSON.") from None


class JsonRequest(Request):
    """Quart's request, whose `get_json` refuses any malformed body with BadRequest (400).

    Quart's own decodes the body as UTF-8 outside its error handling, so one
    invalid byte became a 500; the parsed value is not cached (the raw body is).
    """

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """The body as JSON when it is declared JSON (or `force`), else None; None instead of 400 when `silent`."""
        if not (force or self.is_json):
            return None
        try:
            return json_body(await self.get_data(cache=cache, as_text=False, parse_form_data=False))
        except BadRequest:
            if silent:
                return None
            raise


def error_response(error: AppError) -> Response:
    """The JSON reply for an application error."""
    response = jsonify(error.body())
    response.status_code = error.status
    response.headers.update(error.headers())
    return response


def _validation_message(error: RequestSchemaValidationError) -> str:
    inner = error.validation_error
    details = getattr(inner, "errors", None)
    if callable(details):
        parts = []
        for item in details()[:5]:
            where = ".".join(str(p) for p in item.get("loc", ())) or "body"
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
        return "; ".join(parts)
    return "The request body does not match the expected shape."


def register(app: Quart) -> None:
    """Render every error, the app's own and the framework's, in the API's shape.

    Also makes `app` decode JSON bodies with `JsonRequest`.
    """
    app.request_class = JsonRequest

    @app.errorhandler(AppError)
    async def _app_error(error: AppError) -> Response:
        return error_response(error)

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema_error(error: RequestSchemaValidationError) -> Response:
        return error_response(BadRequest(_validation_message(error)))

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 413:
            return error_response(PayloadTooLarge())
        message = error.description or ""
        if status == 400 and message.startswith("The browser (or proxy)"):
            message = "The request body is not valid JSON."
        response = jsonify({"error": {"code": _HTTP_CODES.get(status, "error"), "message": message}})
        response.status_code = status
        for key, value in error.get_headers():
            if key.lower() not in {"content-type", "content-length"}:
                response.headers[key] = value
        return response

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        overloaded = busy(error)
        if overloaded is not None:
            log.warning("storage is busy: %s %s answered 503", request.method, request.path)
            return error_response(overloaded)
        log.exception("unhandled error")
        response = jsonify({"error": {"code": "internal_error", "message": "Something went wrong on the server."}})
        response.status_code = 500
        return response
