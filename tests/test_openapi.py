"""The API documents: /openapi.json (valid, complete, honest), the /docs viewer, docs/asyncapi.yaml, docs/api.md.

`test_api_conforms_to_its_document` runs the schemathesis command against a
live server (`quart-rooms serve` in a subprocess, with an admin's token for
the routes that need one): no request may get a 5xx, a status the document
does not list, a body or header that does not match it; a request the
document allows may not be refused, one it forbids may not be accepted, and
routes that need a token must refuse requests without one. Examples per
operation: QUART_ROOMS_TEST_SCHEMATHESIS_EXAMPLES (default 12); generation is
deterministic, so a failure reproduces. About 20-30 seconds.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import secrets
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
import yaml
from openapi_spec_validator import validate as validate_openapi

from tests.conftest import free_port
from tests.helpers import Api

REPO = Path(__file__).resolve().parents[1]
DOCS_STATIC = REPO / "quart_rooms" / "api" / "docs_static"
PUBLIC = {
    ("post", "/api/auth/login"), ("post", "/api/auth/refresh"), ("post", "/api/auth/logout"),
    ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"),
}
ERROR_REF = "#/components/schemas/Error"
ADMIN_PASSWORD = "admin-password-1"
EXAMPLES = int(os.environ.get("QUART_ROOMS_TEST_SCHEMATHESIS_EXAMPLES", "12"))


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every operation in an OpenAPI document."""
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


# The document -----------------------------------------------------------------------------


async def test_document_is_valid_openapi(api: Api) -> None:
    """openapi-spec-validator accepts /openapi.json (OpenAPI 3.1), which needs no token."""
    reply = await api.get("/openapi.json")
    assert reply.status_code == 200
    doc = reply.json()
    assert doc["openapi"].startswith("3.1")
    validate_openapi(doc)


async def test_every_operation_documents_its_replies(api: Api) -> None:
    """A success reply (204 without content), errors in the one shared shape, 429 with Retry-After."""
    doc = (await api.get("/openapi.json")).json()
    assert set(doc["components"]["schemas"]["Error"]["required"]) == {"error"}
    detail = doc["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message"}
    seen = 0
    for method, path, operation in operations(doc):
        seen += 1
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        successes = [status for status in responses if status.startswith("2")]
        assert successes, where
        assert all(responses[status]["description"] for status in responses), where
        for status in successes:
            if status == "204":
                assert "content" not in responses[status], where
            else:
                assert responses[status]["content"], where
        for status, response in responses.items():
            if status.startswith("4") and path != "/readyz":
                assert response["content"]["application/json"]["schema"]["$ref"] == ERROR_REF, (where, status)
        if "429" in responses:
            assert responses["429"]["headers"]["Retry-After"]["required"] is True, where
        if (method, path) not in PUBLIC:
            assert "401" in responses, where
        if "requestBody" in operation:
            assert {"400", "413"} <= set(responses), where
        if operation["parameters"]:
            assert "400" in responses or "404" in responses, where
    assert seen >= 24
    assert doc["paths"]["/api/rooms/{room}/messages/{message_id}"]["delete"]["responses"]["204"]
    # The history reply: messages and tombstones.
    page = doc["paths"]["/api/rooms/{room}/messages"]["get"]["responses"]["200"]["content"]["application/json"]
    items = page["schema"]["properties"]["messages"]["items"]["anyOf"]
    assert {item["$ref"] for item in items} == {"#/components/schemas/MessageOut", "#/components/schemas/TombstoneOut"}
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


async def test_public_routes_need_no_token_and_the_rest_need_the_bearer_scheme(api: Api) -> None:
    """`security: []` on sign-in and operators' routes; the bearer scheme (the default) everywhere else."""
    doc = (await api.get("/openapi.json")).json()
    assert doc["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for method, path, operation in operations(doc):
        if (method, path) in PUBLIC:
            assert operation.get("security") == [], (method, path)
        else:
            assert operation.get("security", doc["security"]) == [{"bearer": []}], (method, path)
    # ... and the server agrees: the public routes answer without a token.
    assert (await api.get("/healthz")).status_code == 200
    assert (await api.get("/readyz")).status_code == 200
    assert (await api.post("/api/auth/refresh")).json()["error"]["code"] == "unauthorized"


async def test_document_lists_api_routes_only(api: Api) -> None:
    """No static files, no viewer pages; every path is an API route, the operators' or the document's."""
    doc = (await api.get("/openapi.json")).json()
    for path in doc["paths"]:
        assert path.startswith("/api/") or path in {"/healthz", "/readyz", "/metrics"}, path
    ids = [operation["operationId"] for _, _, operation in operations(doc)]
    assert len(ids) == len(set(ids))


async def test_path_parameters_carry_the_name_rules(api: Api) -> None:
    """{room} and {username} have the name rules; {message_id} is a whole number."""
    doc = (await api.get("/openapi.json")).json()
    for _, path, operation in operations(doc):
        for parameter in operation["parameters"]:
            if parameter["in"] != "path":
                continue
            schema = parameter["schema"]
            if parameter["name"] in ("room", "username"):
                assert schema["pattern"].startswith("^(?!\\.+$)"), path
            else:
                assert parameter["name"] == "message_id" and schema["type"] == "integer", path


# The viewer ------------------------------------------------------------------------------


def _readme_version() -> str:
    match = re.search(r"swagger-ui-dist (\d+\.\d+\.\d+)", (DOCS_STATIC / "README.md").read_text())
    assert match, "docs_static/README.md names the Swagger UI version"
    return match[1]


async def test_docs_viewer_comes_from_the_package(api: Api) -> None:
    """/docs and its files come from this server, under a policy that allows only 'self', nothing inline."""
    page = await api.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert "http" not in policy and "unsafe" not in policy
    assert "<script>" not in page.text and "http" not in page.text.replace("http-equiv", "")
    for name, kind in [("swagger-ui-bundle.js", "javascript"), ("init.js", "javascript"), ("swagger-ui.css", "css")]:
        reply = await api.get(f"/docs/static/{name}")
        assert reply.status_code == 200 and kind in reply.headers["content-type"], name
        assert f"docs/static/{name}" in page.text
    assert (await api.get("/redocs")).status_code == 404
    assert (await api.get("/scalar")).status_code == 404
    # The vendored files are what the README names, with their licence.
    version = _readme_version()
    assert f'PACKAGE_VERSION:"{version}"' in (DOCS_STATIC / "swagger-ui-bundle.js").read_text()
    assert "Apache License" in (DOCS_STATIC / "LICENSE").read_text()
    assert (DOCS_STATIC / "NOTICE").exists()


def test_package_data_includes_the_viewer() -> None:
    """Every file under docs_static/ matches a pattern of [tool.setuptools.package-data]."""
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["quart_rooms"]
    package = REPO / "quart_rooms"
    for file in DOCS_STATIC.rglob("*"):
        if file.is_file():
            relative = file.relative_to(package).as_posix()
            assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def _chromium() -> str:
    path = os.environ.get("QUART_ROOMS_TEST_CHROMIUM")
    if path:
        return path
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("the viewer test needs Chromium: set QUART_ROOMS_TEST_CHROMIUM")
    return "/usr/bin/chromium"


async def test_docs_viewer_renders_offline_under_its_policy(api: Api) -> None:
    """Swagger UI shows every operation, with no request outside the server and no policy violation."""
    from playwright.async_api import async_playwright

    doc = (await api.get("/openapi.json")).json()
    count = sum(1 for _ in operations(doc))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            context = await browser.new_context(offline=False)
            page = await context.new_page()
            problems: list[str] = []
            outside: list[str] = []
            page.on("console", lambda message: problems.append(message.text)
                    if message.type in ("error", "warning") else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: None if request.url.startswith(api.server.url)
                    else outside.append(request.url))
            # Nothing outside the server is reachable, as on a machine without internet.
            await context.route(re.compile(r"^(?!" + re.escape(api.server.url) + ")"), lambda route: route.abort())
            await page.goto(api.server.url + "/docs")
            await page.wait_for_selector(".opblock", timeout=15000)
            assert await page.locator(".opblock").count() == count
            assert "quart-rooms" in await page.locator(".info .title").inner_text()
            assert outside == [] and problems == [], (outside, problems)
        finally:
            await browser.close()


# AsyncAPI and docs/api.md ----------------------------------------------------------------

CLIENT_EVENTS = {"join", "leave", "message", "refresh"}
SERVER_EVENTS = {"welcome", "message", "presence", "kicked", "access", "message_deleted", "session_expired"}


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _message(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    """The message object a channel's message reference points at (through its component)."""
    message = _resolve(doc, ref)
    return _resolve(doc, message["$ref"]) if "$ref" in message else message


def _schema(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    return _resolve(doc, schema["$ref"]) if "$ref" in schema else schema


def _properties(doc: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    """Every property name a schema (or its oneOf/anyOf/allOf branches) can have."""
    schema = _schema(doc, schema)
    names = set(schema.get("properties", {}))
    for key in ("oneOf", "anyOf", "allOf"):
        for branch in schema.get(key, []):
            names |= _properties(doc, branch)
    return names


def test_asyncapi_document() -> None:
    """docs/asyncapi.yaml: AsyncAPI 3.0 with every client and server event, their payloads and acks.

    (Checked against the official AsyncAPI 3.0.0 JSON Schema when it was written; the test checks
    that it is YAML of the expected structure with every reference resolving.)
    """
    doc = yaml.safe_load((REPO / "docs" / "asyncapi.yaml").read_text())
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    for ref in _refs(doc):  # every reference points at something
        _resolve(doc, ref)
    sent: dict[str, dict[str, Any]] = {}
    received: dict[str, dict[str, Any]] = {}
    for operation in doc["operations"].values():
        channel = operation["channel"]["$ref"]
        assert channel.startswith("#/channels/")
        for reference in operation["messages"] + operation.get("reply", {}).get("messages", []):
            assert reference["$ref"].startswith(channel + "/messages/")  # AsyncAPI 3: the channel's own messages
        (name,) = {_message(doc, reference["$ref"])["name"] for reference in operation["messages"]}
        if operation["action"] == "send":
            assert operation["reply"]["messages"], f"{name} has an ack"
            sent[name] = operation
        else:
            assert operation["action"] == "receive"
            received[name] = operation
    assert set(sent) == CLIENT_EVENTS
    assert SERVER_EVENTS <= set(received) <= SERVER_EVENTS | {"connect_error"}

    def payload(operation: dict[str, Any], part: str = "messages") -> dict[str, Any]:
        source = operation if part == "messages" else operation["reply"]
        return _message(doc, source["messages"][0]["$ref"])["payload"]

    assert {"room", "since_id", "epoch"} <= _properties(doc, payload(sent["join"]))
    join_ack = _properties(doc, payload(sent["join"], "reply"))
    assert {"ok", "room", "role", "epoch", "members", "history", "more", "reset", "error", "message"} <= join_ack
    assert {"room", "msg", "client_id"} <= _properties(doc, payload(sent["message"]))
    assert {"id", "ts", "error", "retry_after"} <= _properties(doc, payload(sent["message"], "reply"))
    assert {"expires_in", "error"} <= _properties(doc, payload(sent["refresh"], "reply"))
    assert {"id", "room", "user", "msg", "ts"} <= _properties(doc, payload(received["message"]))
    assert {"room", "role"} <= _properties(doc, payload(received["access"]))
    assert {"room", "id"} <= _properties(doc, payload(received["message_deleted"]))
    assert {"max_message_chars", "messages_per_10s", "max_recovery"} <= \
        set(_schema(doc, payload(received["welcome"]))["properties"]["limits"]["properties"])
    reasons = _schema(doc, payload(received["session_expired"]))["properties"]["reason"]["enum"]
    assert set(reasons) == {"token_expired", "account_changed", "account_deleted", "signed_out"}
    history = _schema(doc, _schema(doc, payload(sent["join"], "reply"))["oneOf"][0])["properties"]["history"]
    assert {_schema(doc, item)["description"] for item in _schema(doc, history["items"])["oneOf"]}
    errors = _schema(doc, doc["components"]["schemas"]["ErrorAck"])["properties"]["error"]["enum"]
    assert {"bad_request", "no_such_room", "forbidden", "not_in_room", "too_large", "rate_limited"} <= set(errors)


def test_api_md_stands_alone() -> None:
    """docs/api.md names every route and error code, and links only to files in the repository."""
    text = (REPO / "docs" / "api.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)[^)]*\)", text):
        assert not target.startswith(("http:", "https:", "/")), target
        resolved = (REPO / "docs" / target).resolve()
        assert REPO in resolved.parents and resolved.exists(), target
    assert "contract.md" not in text
    from quart_rooms import errors
    codes = {cls.code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.AppError)}
    for code in codes | {"too_many_sockets", "internal_error", "method_not_allowed", "request_timeout"}:
        assert f"`{code}`" in text, code
    for word in ("since_id", "epoch", "more", "reset", "retry_after", "client_id", "Retry-After", "message_deleted",
                 "access", "session_expired", "token_expired", "account_changed", "account_deleted", "signed_out",
                 "after_id", "quart_rooms_refresh", "max_recovery", "tombstone"):
        assert word in text, word


async def test_api_md_names_every_route(api: Api) -> None:
    doc = (await api.get("/openapi.json")).json()
    text = (REPO / "docs" / "api.md").read_text()
    for method, path, _ in operations(doc):
        assert f"{method.upper()} {path}" in text, (method, path)


# Schemathesis against a live server --------------------------------------------------------


@dataclass
class LiveServer:
    url: str
    token: str
    log: Path


def _server_env(instance: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUART_ROOMS_")}
    env.update(
        QUART_ROOMS_INSTANCE_PATH=str(instance),
        QUART_ROOMS_JWT_SECRET=secrets.token_urlsafe(32),
        QUART_ROOMS_ACCESS_LOG="false",
        QUART_ROOMS_LOG_LEVEL="WARNING",
        QUART_ROOMS_EVENT_LOOP="asyncio",
        QUART_ROOMS_ACCESS_TOKEN_TTL="3600",  # the run's one token outlives any run
    )
    return env


async def _seed(url: str, token: str) -> None:
    """Data for the document's examples: user alice, public room lobby with two messages."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        alice = {"username": "alice", "password": "alice-password"}
        assert (await http.post("/api/admin/users", json=alice)).status_code == 201
        assert (await http.post("/api/admin/rooms", json={"name": "lobby", "public": True})).status_code == 201
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=5)
    try:
        assert (await client.call("join", {"room": "lobby"}, timeout=5))["ok"]
        for text in ("hello", "world"):
            assert (await client.call("message", {"room": "lobby", "msg": text}, timeout=5))["ok"]
    finally:
        await client.disconnect()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`quart-rooms serve` in a subprocess with an admin (its token) and the examples' data."""
    folder = tmp_path_factory.mktemp("schemathesis")
    env = _server_env(folder / "instance")
    cli = [sys.executable, "-m", "quart_rooms.cli"]
    made = subprocess.run([*cli, "create-user", "admin", "--admin"], input=ADMIN_PASSWORD + "\n", env=env, cwd=folder,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    port = free_port()
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, cwd=folder, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert process.poll() is None, (folder / "server.log").read_text()
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        reply = httpx.post(url + "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert reply.status_code == 200, reply.text
        token = reply.json()["access_token"]
        asyncio.run(_seed(url, token))
        yield LiveServer(url, token, folder / "server.log")
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# Hooks for the schemathesis command, written into the run's folder.
HOOKS = '''
import os

import schemathesis


# The admin's token goes to the operations that need the bearer scheme; the public ones get none
# (a token sent to /api/auth/logout would end the run's own session).
@schemathesis.auth(refresh_interval=None, retry_on=[]).skip_for(path_regex=r"^/(api/auth/|healthz|readyz|metrics)")
class AdminToken:
    def get(self, case, ctx):
        return os.environ["QUART_ROOMS_SCHEMATHESIS_TOKEN"]

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """Keep the run's own session and the examples' data.

    A new password for the admin would end the token the run uses; deleting the examples' user or
    room would leave the later operations nothing to work on (they get another name instead).
    """
    method, path, where = case.method.upper(), case.operation.path, case.path_parameters or {}
    if method == "PATCH" and path == "/api/admin/users/{username}" and str(where.get("username")).lower() == "admin":
        where["username"] = "alice"
    if method == "DELETE" and path == "/api/admin/users/{username}" and str(where.get("username")).lower() == "alice":
        where["username"] = "nobody"
    if method == "DELETE" and path == "/api/admin/rooms/{room}" and str(where.get("room")).lower() == "lobby":
        where["room"] = "nowhere"


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    """The one documented refusal the document cannot express: before_id and after_id together (400)."""
    query = case.query if isinstance(case.query, dict) else {}
    both = query.get("before_id") is not None and query.get("after_id") is not None
    return not (failure.code == "ST202" and both and case.operation.path == "/api/rooms/{room}/messages")
'''
CHECKS = [
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "positive_data_acceptance", "negative_data_rejection", "ignored_auth",
]


def test_api_conforms_to_its_document(live_server: LiveServer, tmp_path: Path) -> None:
    """schemathesis (examples, coverage, fuzzing; valid and invalid data) finds no 5xx and no undocumented reply."""
    (tmp_path / "quart_rooms_hooks.py").write_text(HOOKS)
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, SCHEMATHESIS_HOOKS="quart_rooms_hooks", QUART_ROOMS_SCHEMATHESIS_TOKEN=live_server.token,
               PYTHONPATH=path)
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", live_server.url + "/openapi.json",
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing", "--max-examples", str(EXAMPLES), "--generation-deterministic",
        "--workers", "1", "--request-timeout", "10", "--no-color",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    report = done.stdout[-30000:] + done.stderr[-5000:] + "\n--- server log ---\n" + live_server.log.read_text()[-5000:]
    assert done.returncode == 0, report
    assert "Authentication failed" not in done.stdout, report  # the admin's token held for the whole run
    assert re.search(r"Tested: *2\d", done.stdout), report
