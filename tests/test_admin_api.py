"""The admin HTTP API, as an admin and as everyone else sees it."""

from __future__ import annotations

import pytest

from tests.conftest import both_backends
from tests.helpers import Api


@both_backends
async def test_admin_walkthrough(admin_api: Api, api: Api) -> None:
    """Create a user and a room, grant, revoke, and read it all back in the audit log."""
    await admin_api.create_user("alice", "alice-password")
    await admin_api.create_room("ops", title="Operations")
    await admin_api.grant("ops", "alice", "read")

    await api.login("alice", "alice-password")
    rooms = (await api.get("/api/rooms")).json()["rooms"]
    assert rooms == [{"name": "ops", "title": "Operations", "public": False, "role": "read"}]

    grants = (await admin_api.get("/api/admin/rooms/ops/grants")).json()
    assert grants == {"grants": [{"username": "alice", "role": "read"}]}
    await admin_api.revoke("ops", "alice")
    assert (await api.get("/api/rooms")).json() == {"rooms": []}
    assert (await admin_api.get("/api/admin/rooms/ops/grants")).json() == {"grants": []}

    users = (await admin_api.get("/api/admin/users")).json()["users"]
    assert {"username": "alice", "is_admin": False, "disabled": False} in users
    rooms = (await admin_api.get("/api/admin/rooms")).json()["rooms"]
    assert rooms == [{"name": "ops", "title": "Operations", "public": False}]

    entries = (await admin_api.get("/api/admin/audit")).json()["entries"]
    assert [(e["actor"], e["action"], e["target"]) for e in entries[:4]] == [
        ("admin", "grant.delete", "room:ops user:alice"),
        ("admin", "grant.put", "room:ops user:alice role:read"),
        ("admin", "room.create", "room:ops"),
        ("admin", "user.create", "user:alice"),
    ]
    assert entries[0]["id"] > entries[1]["id"]
    assert entries[0]["ts"].endswith("Z")
    limited = (await admin_api.get("/api/admin/audit", params={"limit": 2})).json()["entries"]
    assert limited == entries[:2]


async def test_change_and_delete_user(admin_api: Api, api: Api) -> None:
    """PATCH changes the password and flags; DELETE removes the account."""
    await admin_api.create_user("bob", "old-password")
    reply = await admin_api.patch("/api/admin/users/bob", json={"password": "new-password", "is_admin": True})
    assert reply.status_code == 200
    assert reply.json() == {"username": "bob", "is_admin": True, "disabled": False}
    bad = await api.http.post("/api/auth/login", json={"username": "bob", "password": "old-password"})
    assert bad.status_code == 401
    await api.login("bob", "new-password")
    assert (await api.get("/api/me")).json() == {"username": "bob", "is_admin": True}

    reply = await admin_api.patch("/api/admin/users/bob", json={"disabled": True})
    assert reply.json()["disabled"] is True
    assert (await api.get("/api/me")).status_code == 401  # a live token stops working at once
    assert (await admin_api.delete("/api/admin/users/bob")).status_code == 204
    assert (await admin_api.delete("/api/admin/users/bob")).json()["error"]["code"] == "not_found"


async def test_non_admins_are_refused(admin_api: Api, api: Api) -> None:
    """Every admin route answers 403 to a signed-in user and 401 to nobody."""
    await admin_api.create_user("carol")
    routes = [
        ("GET", "/api/admin/users"), ("POST", "/api/admin/users"), ("PATCH", "/api/admin/users/admin"),
        ("DELETE", "/api/admin/users/admin"), ("GET", "/api/admin/rooms"), ("POST", "/api/admin/rooms"),
        ("DELETE", "/api/admin/rooms/x"), ("PUT", "/api/admin/rooms/x/grants/carol"),
        ("DELETE", "/api/admin/rooms/x/grants/carol"), ("GET", "/api/admin/rooms/x/grants"),
        ("GET", "/api/admin/audit"),
    ]
    for method, path in routes:
        reply = await api.request(method, path, json={})
        assert reply.status_code == 401, (method, path)
        assert reply.json()["error"]["code"] == "unauthorized"
    await api.login("carol", "password-123")
    for method, path in routes:
        reply = await api.request(method, path, json={})
        assert reply.status_code == 403, (method, path)
        assert reply.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"username": "bad name", "password": "password-123"}, 400, "bad_request"),
        ({"username": "x" * 33, "password": "password-123"}, 400, "bad_request"),
        ({"username": "", "password": "password-123"}, 400, "bad_request"),
        ({"username": "dave", "password": "short"}, 400, "bad_request"),
        ({"username": "dave", "password": "password-123", "is_admin": "yes"}, 400, "bad_request"),
        ({"username": "dave", "password": "password-123", "role": "x"}, 400, "bad_request"),
        ({"username": "dave"}, 400, "bad_request"),
        ({"username": "admin", "password": "password-123"}, 409, "conflict"),
    ],
)
async def test_bad_user_bodies(admin_api: Api, body: dict[str, object], status: int, code: str) -> None:
    """Wrong types, unknown fields, bad names and duplicates get their error shape."""
    reply = await admin_api.post("/api/admin/users", json=body)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["code"] == code
    assert error["message"]


async def test_malformed_and_oversized_bodies(admin_api: Api) -> None:
    """Broken JSON is a 400, a body over max_body_bytes a 413, both in the API's shape."""
    reply = await admin_api.post(
        "/api/admin/rooms", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "bad_request"
    big = {"name": "big", "title": "x" * 70_000}
    reply = await admin_api.post("/api/admin/rooms", json=big)
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "payload_too_large"
    reply = await admin_api.post("/api/admin/rooms", json=["a list"])
    assert reply.status_code == 400


async def test_rooms_and_grants_errors(admin_api: Api) -> None:
    """Unknown users and rooms are 404, duplicates 409, bad roles 400."""
    await admin_api.create_room("lobby", public=True)
    assert (await admin_api.post("/api/admin/rooms", json={"name": "lobby"})).status_code == 409
    assert (await admin_api.post("/api/admin/rooms", json={"name": "l" * 65})).status_code == 400
    reply = await admin_api.put("/api/admin/rooms/lobby/grants/nobody", json={"role": "read"})
    assert (reply.status_code, reply.json()["error"]["code"]) == (404, "not_found")
    reply = await admin_api.put("/api/admin/rooms/nowhere/grants/admin", json={"role": "read"})
    assert (reply.status_code, reply.json()["error"]["code"]) == (404, "not_found")
    reply = await admin_api.put("/api/admin/rooms/lobby/grants/admin", json={"role": "owner"})
    assert reply.status_code == 400
    assert (await admin_api.delete("/api/admin/rooms/lobby/grants/admin")).status_code == 404
    assert (await admin_api.get("/api/admin/rooms/nowhere/grants")).status_code == 404
    assert (await admin_api.delete("/api/admin/rooms/nowhere")).status_code == 404
    assert (await admin_api.delete("/api/admin/rooms/lobby")).status_code == 204
    assert (await admin_api.get("/api/admin/rooms")).json() == {"rooms": []}


async def test_admin_cannot_lock_themselves_out(admin_api: Api) -> None:
    """Disabling, demoting or deleting oneself is refused with 409."""
    assert (await admin_api.patch("/api/admin/users/admin", json={"disabled": True})).status_code == 409
    assert (await admin_api.patch("/api/admin/users/admin", json={"is_admin": False})).status_code == 409
    assert (await admin_api.delete("/api/admin/users/admin")).status_code == 409
    assert (await admin_api.patch("/api/admin/users/admin", json={})).status_code == 400


async def test_openapi_lists_every_route(api: Api) -> None:
    """The OpenAPI document names every route of the contract."""
    doc = (await api.get("/openapi.json")).json()
    expected = {
        "/api/auth/login": {"post"}, "/api/auth/refresh": {"post"}, "/api/auth/logout": {"post"},
        "/api/me": {"get"}, "/api/rooms": {"get"}, "/api/rooms/{room}/messages": {"get"},
        "/api/admin/users": {"get", "post"}, "/api/admin/users/{username}": {"patch", "delete"},
        "/api/admin/rooms": {"get", "post"}, "/api/admin/rooms/{room}": {"patch", "delete"},
        "/api/admin/rooms/{room}/grants/{username}": {"put", "delete"},
        "/api/admin/rooms/{room}/grants": {"get"}, "/api/admin/audit": {"get"},
        "/healthz": {"get"}, "/readyz": {"get"}, "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(doc["paths"][path]), path
    assert "bearer" in doc["components"]["securitySchemes"]


async def test_api_docs_page_and_security_headers(api: Api) -> None:
    """/docs serves the API viewer from the package (no CDN); the chat page keeps the strict policy."""
    docs = await api.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    docs_policy = docs.headers["content-security-policy"]
    assert "script-src 'self';" in docs_policy and "unsafe-inline" not in docs_policy and "https:" not in docs_policy
    page = await api.get("/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
