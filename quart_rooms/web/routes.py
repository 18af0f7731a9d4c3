"""The page routes: the single-page chat and admin UI, its static files, and its security headers."""

from __future__ import annotations

from quart import Blueprint, Response, render_template, request
from quart_schema import hide

from quart_rooms import __version__

# The page's files are under /assets: the Quart app keeps /static for itself.
blueprint = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/assets")


@blueprint.get("/")
@hide
async def index() -> Response:
    """The chat page (sign-in, rooms, admin view); everything else it does goes through the API."""
    response = Response(await render_template("index.html", version=__version__))
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.after_request
async def revalidate_assets(response: Response) -> Response:
    """The JavaScript modules import each other without a version in the URL: revalidate on every load."""
    if request.endpoint == "web.static":
        response.headers["Cache-Control"] = "no-cache"
    return response


PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# The API viewer (/docs) is Swagger UI served from the package (quart_rooms/api/docs_static),
# started by a script file: only the server's own files, nothing inline, no CDN.
API_DOCS_PATHS = ("/docs",)
API_DOCS_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@blueprint.after_app_request
async def security_headers(response: Response) -> Response:
    """Keep the page's scripts and styles to our own files and the page out of frames."""
    policy = API_DOCS_POLICY if request.path in API_DOCS_PATHS else PAGE_POLICY
    response.headers.setdefault("Content-Security-Policy", policy)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response
