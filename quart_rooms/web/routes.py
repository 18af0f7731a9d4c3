"""The page routes."""

from __future__ import annotations

from quart import Blueprint, Response, render_template
from quart_schema import hide

blueprint = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static")


@blueprint.get("/")
@hide
async def index() -> str:
    """The chat page."""
    return await render_template("index.html")


@blueprint.after_app_request
async def security_headers(response: Response) -> Response:
    """Keep the page's scripts to our own files and the page out of frames."""
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response
