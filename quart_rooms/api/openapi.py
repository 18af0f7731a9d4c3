"""The OpenAPI document (`/openapi.json`) and its viewer (`/docs`), built with Quart-Schema.

Routes document themselves with Quart-Schema's decorators; the helpers here
bundle the ones every route repeats:

- `errors(400, 401, ...)`: the error replies a route can give, each with the
  one shared error schema (`Error`: `{"error": {"code", "message"}}`), and a
  `Retry-After` header on 429;
- `no_content`: a 204 reply without a body;
- `public`: a route that needs no bearer token (`security: []`; every other
  route needs the `bearer` scheme, the document's default).

`RoomsOpenAPIProvider` fills in what Quart-Schema 0.25 leaves out or gets
wrong, through the hooks its OpenAPIProvider offers for that: path
parameters get their name rules (a room name, a username, a message id);
response headers go in the response object's `headers` (Quart-Schema writes
them into `content`, which is not valid OpenAPI); a `NoContent` reply has no
`content`; a model with a `media_type` is documented with that media type.

`ApiSchema` is Quart-Schema's extension with the viewer served from the
package (`docs_static/`, Swagger UI; no CDN, no inline script), and with every
blueprint's static files left out of the document.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from quart import Blueprint, Quart
from quart_schema import (
    DataSource,
    QuartSchema,
    document_response,
    hide,
    security_scheme,
)
from quart_schema.conversion import model_schema
from quart_schema.openapi import OpenAPIProvider
from werkzeug.routing.converters import BaseConverter

from quart_rooms.api.schemas import (
    BadRequestReply,
    ConflictReply,
    ForbiddenReply,
    NoContent,
    NotFoundReply,
    PayloadTooLargeReply,
    RateLimitedReply,
    RetryAfter,
    UnauthorizedReply,
)
from quart_rooms.names import MAX_ID, ROOM_PATTERN, USERNAME_PATTERN

F = TypeVar("F", bound=Callable[..., Any])

ERROR_REPLIES: dict[int, type[Any]] = {
    400: BadRequestReply,
    401: UnauthorizedReply,
    403: ForbiddenReply,
    404: NotFoundReply,
    409: ConflictReply,
    413: PayloadTooLargeReply,
    429: RateLimitedReply,
}

# The rules of the path parameters, by name (quart_rooms/names.py).
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "room": {"type": "string", "pattern": ROOM_PATTERN, "minLength": 1, "maxLength": 64, "examples": ["lobby"],
             "description": "A room name, any case: 1-64 of A-Z a-z 0-9 _ . - and not dots alone."},
    "username": {"type": "string", "pattern": USERNAME_PATTERN, "minLength": 1, "maxLength": 32, "examples": ["alice"],
                 "description": "A username, any case: 1-32 of A-Z a-z 0-9 _ . - and not dots alone."},
    "message_id": {"type": "integer", "minimum": 0, "maximum": MAX_ID, "examples": [1],
                   "description": "A message id (ids grow by one within a room, from 1)."},
}

DOCS_STATIC = Path(__file__).parent / "docs_static"
DOCS_PAGE = "index.html"


def errors(*statuses: int) -> Callable[[F], F]:
    """Document the error replies a route can give (the shared error schema; Retry-After on 429)."""

    def decorator(func: F) -> F:
        for status in statuses:
            headers = RetryAfter if status == 429 else None
            func = document_response(ERROR_REPLIES[status], status, headers)(func)
        return func

    return decorator


def no_content(func: F) -> F:
    """Document a 204 reply without a body."""
    return document_response(NoContent, 204)(func)


def public(func: F) -> F:
    """Document a route that needs no bearer token (`security: []`)."""
    return security_scheme([])(func)


def _header_name(field: str) -> str:
    """`retry_after` -> `Retry-After`."""
    return "-".join(part.capitalize() for part in field.split("_"))


class RoomsOpenAPIProvider(OpenAPIProvider):
    """Quart-Schema's document, with typed path parameters, response headers in place and bodiless replies."""

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        """The parameter with its name rule, for the parameters in PATH_PARAMETERS."""
        parameter = super().build_path_parameter(name, converter)
        rule = PATH_PARAMETERS.get(name)
        if rule is not None:
            schema = dict(rule)
            parameter["description"] = schema.pop("description")
            parameter["schema"] = schema
        return parameter

    def build_request_body(self, model: type[Any], source: DataSource) -> tuple[dict[str, Any], dict[str, Any]]:
        """The request body, required unless the model says `body_required = False`."""
        body, definitions = super().build_request_body(model, source)
        body["required"] = getattr(model, "body_required", True)
        return body, definitions

    def build_response_object(
        self, model: type[Any], headers_model: type[Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The response object: no content for NoContent, the model's media type, headers under `headers`."""
        definitions: dict[str, Any]
        if model is NoContent:
            response: dict[str, Any] = {"description": (NoContent.__doc__ or "").strip()}
            definitions = {}
        else:
            response, definitions = super().build_response_object(model, None)
            media_type = getattr(model, "media_type", None)
            if isinstance(media_type, str):
                response["content"] = {media_type: response["content"].pop("application/json")}
        if headers_model is not None:
            schema = model_schema(headers_model, preference=self._app.config["QUART_SCHEMA_CONVERSION_PREFERENCE"])
            definitions.update(schema.pop("$defs", {}))
            required = set(schema.get("required", []))
            headers: dict[str, Any] = {}
            for field, field_schema in schema["properties"].items():
                field_schema = dict(field_schema)
                field_schema.pop("title", None)
                header: dict[str, Any] = {"schema": field_schema, "required": field in required}
                if "description" in field_schema:
                    header["description"] = field_schema.pop("description")
                headers[_header_name(field)] = header
            response["headers"] = headers
        if not response.get("description"):
            response["description"] = "A reply."
        return response, definitions


class ApiSchema(QuartSchema):
    """Quart-Schema's extension: `/openapi.json`, and `/docs` served from the package.

    Quart-Schema's own viewer pages load their script from a CDN and start it
    with an inline script; here `/docs` is a static page whose script and
    styles are files in `docs_static/` (Swagger UI, see its README), so the
    page works offline under a policy that allows only the server's own
    files. `/redocs` and `/scalar` are not served.
    """

    openapi_provider_class = RoomsOpenAPIProvider

    def __init__(self, app: Quart | None = None, **options: Any) -> None:
        options.setdefault("redoc_ui_path", None)
        options.setdefault("scalar_ui_path", None)
        super().__init__(app, **options)

    def init_app(self, app: Quart) -> None:
        """Set up the document and the viewer; static files stay out of the document."""
        super().init_app(app)
        # Quart-Schema hides the app's static route; the blueprints' (the page's /assets) go too.
        hide(Blueprint.send_static_file)
        if self.swagger_ui_path is not None:
            viewer = Blueprint(
                "api_docs", __name__, static_folder=str(DOCS_STATIC), static_url_path=self.swagger_ui_path + "/static"
            )
            app.register_blueprint(viewer)

    @hide
    async def swagger_ui(self) -> str:
        """The viewer's page: static HTML that loads Swagger UI and its start script from /docs/static."""
        return (DOCS_STATIC / DOCS_PAGE).read_text(encoding="utf-8")
