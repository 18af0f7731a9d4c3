"""Sign-in over HTTP: login, refresh rotation, reuse detection, logout, throttling."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import add_admin, both_backends, make_settings, running
from tests.helpers import Api, Server, chatters


@both_backends
async def test_login_and_me(api: Api, server: Server) -> None:
    """A good login returns both tokens; /api/me answers with the account."""
    body = await api.login("admin", server.admin_password)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert (await api.get("/api/me")).json() == {"username": "admin", "is_admin": True}


async def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    """Unknown user and wrong password get the same 401 reply."""
    wrong = await api.http.post("/api/auth/login", json={"username": "admin", "password": "nope-nope"})
    unknown = await api.http.post("/api/auth/login", json={"username": "ghost", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {
        "error": {"code": "invalid_credentials", "message": "Wrong username or password."}}


async def test_bad_login_bodies(api: Api) -> None:
    """Missing fields, wrong types and non-JSON are 400."""
    for body in ({"username": "admin"}, {"username": 1, "password": "x"}, {"username": "a", "password": "b", "x": 1}):
        reply = await api.http.post("/api/auth/login", json=body)
        assert reply.status_code == 400, body
        assert reply.json()["error"]["code"] == "bad_request"


async def test_bad_access_tokens(api: Api) -> None:
    """A missing, malformed or non-bearer Authorization header is 401 unauthorized."""
    for headers in ({}, {"Authorization": "Bearer junk"}, {"Authorization": "Basic YTpi"}):
        reply = await api.http.get("/api/me", headers=headers)
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "unauthorized"


@both_backends
async def test_refresh_rotates_and_reuse_revokes_the_family(api: Api, server: Server) -> None:
    """Each refresh gives a new pair; the old one stops working, and reusing it ends the family."""
    first = await api.login("admin", server.admin_password)
    second = (await api.http.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    reuse = await api.http.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401 and reuse.json()["error"]["code"] == "unauthorized"
    # The reuse revoked the whole family: the newest token is dead too.
    after = await api.http.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert after.status_code == 401


async def test_refresh_from_cookie_and_logout(api: Api, server: Server) -> None:
    """The page's HttpOnly cookie refreshes without a body; logout revokes it."""
    reply = await api.http.post("/api/auth/login", json={"username": "admin", "password": server.admin_password})
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/api/auth" in cookie
    refreshed = await api.http.post("/api/auth/refresh")
    assert refreshed.status_code == 200, refreshed.text
    token = refreshed.json()["access_token"]
    out = await api.http.post("/api/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert out.status_code == 204
    body_token = refreshed.json()["refresh_token"]
    again = await api.http.post("/api/auth/refresh", json={"refresh_token": body_token})
    assert again.status_code == 401
    assert (await api.http.post("/api/auth/logout")).status_code == 401
    assert (await api.http.post("/api/auth/refresh", json={"refresh_token": 5})).status_code == 400


async def test_disabled_account_cannot_sign_in_or_refresh(admin_api: Api, api: Api) -> None:
    """A disabled account gets invalid_credentials and its refresh tokens stop working."""
    await admin_api.create_user("frank")
    tokens = await api.login("frank", "password-123")
    await admin_api.patch("/api/admin/users/frank", json={"disabled": True})
    reply = await api.http.post("/api/auth/login", json={"username": "frank", "password": "password-123"})
    assert reply.status_code == 401
    refresh = await api.http.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"login_failures_per_account": 3, "login_failures_per_address": 6}


async def test_failed_logins_are_throttled_per_account(api: Api, server: Server) -> None:
    """After 3 failures on one account: 429 with Retry-After, even with the right password."""
    for _ in range(3):
        reply = await api.http.post("/api/auth/login", json={"username": "admin", "password": "wrong-one"})
        assert reply.status_code == 401
    reply = await api.http.post("/api/auth/login", json={"username": "admin", "password": server.admin_password})
    assert reply.status_code == 429
    assert reply.json()["error"]["code"] == "rate_limited"
    assert int(reply.headers["Retry-After"]) >= 1


async def test_successful_logins_are_never_throttled(api: Api, server: Server) -> None:
    """Many good sign-ins from one address (a load test, an office NAT) all work."""
    for _ in range(20):
        await api.login("admin", server.admin_password)


async def test_failed_logins_are_throttled_per_address(api: Api, admin_api: Api) -> None:
    """Failures with made-up names fill the address's counter; then an account with failures of its
    own is refused from that address, while users with none still sign in (contract 1.1)."""
    await admin_api.create_user("typo")
    await admin_api.create_user("clean")
    for i in range(6):
        reply = await api.http.post("/api/auth/login", json={"username": f"made-up-{i}", "password": "wrong-one"})
        assert reply.status_code == 401
    reply = await api.http.post("/api/auth/login", json={"username": "typo", "password": "wrong-one"})
    assert reply.status_code == 401  # its first failure: it had none of its own
    reply = await api.http.post("/api/auth/login", json={"username": "typo", "password": "password-123"})
    assert reply.status_code == 429 and int(reply.headers["Retry-After"]) >= 1
    await api.login("clean", "password-123")  # no failures of its own: never locked out by others'
    await api.login("admin", api.server.admin_password)


async def test_health_and_metrics(api: Api) -> None:
    """healthz and readyz answer 200; metrics are in Prometheus text format."""
    assert (await api.get("/healthz")).status_code == 200
    ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok"}
    metrics = await api.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "quart_rooms_http_requests_total" in metrics.text


async def test_old_hash_parameters_are_upgraded_at_login(api: Api, server: Server) -> None:
    """A hash made with weaker argon2 parameters is replaced by a current one at the next sign-in."""
    from argon2 import PasswordHasher

    from quart_rooms.auth.passwords import needs_rehash
    from quart_rooms.storage import queries
    from quart_rooms.storage.models import User

    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("legacy-password")
    async with server.services.db.writes() as session:
        session.add(User(username="legacy", password_hash=weak, is_admin=False, disabled=False))
        await session.commit()
    await api.login("legacy", "legacy-password")
    async with server.services.db.writes() as session:
        user = await queries.get_user(session, "legacy")
    assert user is not None and user.password_hash != weak
    assert user.password_hash.startswith("$argon2id$") and not needs_rehash(user.password_hash)
    await api.login("legacy", "legacy-password")


@both_backends
async def test_racing_refreshes_with_one_token_count_as_reuse(api: Api, server: Server) -> None:
    """Two refreshes with the same token at once: one wins at most, and the family ends."""
    import asyncio

    first = await api.login("admin", server.admin_password)
    replies = await asyncio.gather(*(
        api.http.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]}) for _ in range(2)
    ))
    codes = sorted(r.status_code for r in replies)
    assert codes in ([200, 401], [401, 401])
    for reply in replies:
        if reply.status_code == 200:
            later = await api.http.post("/api/auth/refresh", json={"refresh_token": reply.json()["refresh_token"]})
            assert later.status_code == 401  # the family was revoked by the losing request


async def test_huge_ids_are_bad_requests(admin_api: Api) -> None:
    """An id past 64 bits is a 400, not a server error."""
    await admin_api.create_room("r1", public=True)
    reply = await admin_api.get("/api/rooms/r1/messages", params={"before_id": 10**20})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "bad_request"


async def test_a_busy_server_counts_no_failed_sign_ins(database_url: str, tmp_path: Path) -> None:
    """Correct sign-ins refused because the server is busy checking passwords (429 under
    max_pending_sign_ins) are not failed sign-ins: afterwards the account and the address still sign in."""
    settings = make_settings(
        database_url, tmp_path / "busy",
        max_pending_sign_ins=1, login_failures_per_account=2, login_failures_per_address=2,
    )
    async with running(settings) as server:
        await add_admin(server)
        async with Api(server) as api:
            body = {"username": "admin", "password": server.admin_password}
            replies = await asyncio.gather(*(api.http.post("/api/auth/login", json=body) for _ in range(12)))
            busy = [r for r in replies if r.status_code == 429]
            assert busy, "the burst never found the server busy; the test checks nothing"
            assert {r.status_code for r in replies} <= {200, 429}
            assert all("busy" in r.json()["error"]["message"] for r in busy), [r.json() for r in busy]
            await api.login("admin", server.admin_password)  # not locked out by its own burst


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_messages_while_another_process_holds_the_database_are_refused_together(
    database_url: str, admin_api: Api, chatters: Any
) -> None:
    """Messages that cannot be stored because storage is busy: every one of the batch is `unavailable`
    with retry_after after one busy timeout (not one timeout per message), and sent again with the
    same client_id once storage is free, each is stored once."""
    await admin_api.create_room("lobby", public=True)
    alice = await chatters(admin_api.token)
    assert (await alice.call("join", {"room": "lobby"}))["ok"]
    holder = sqlite3.connect(database_url.split(":///", 1)[1], isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = asyncio.get_running_loop().time()
        acks = await asyncio.gather(*(
            alice.sio.call("message", {"room": "lobby", "msg": f"m{i}", "client_id": f"c{i}"}, timeout=30)
            for i in range(5)
        ))
        waited = asyncio.get_running_loop().time() - started
    finally:
        holder.rollback()
        holder.close()
    for ack in acks:
        assert ack["ok"] is False and ack["error"] == "unavailable" and ack["retry_after"] > 0, ack
    assert waited < 20, f"the batch took {waited:.1f} s: refused one message at a time"
    again = [await alice.call("message", {"room": "lobby", "msg": f"m{i}", "client_id": f"c{i}"}) for i in range(5)]
    assert all(ack["ok"] for ack in again), again
    assert [ack["id"] for ack in again] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_writes_while_another_process_holds_the_database_get_503(
    database_url: str, admin_api: Api, api: Api, server: Server
) -> None:
    """A write that waits past SQLite's busy timeout (another process holds the write lock) is 503
    `unavailable` with Retry-After, never a 500; once the lock is gone the same requests work."""
    tokens = await api.login("admin", server.admin_password)
    holder = sqlite3.connect(database_url.split(":///", 1)[1], isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        # One after another: the process's writes wait their turn, each up to the busy timeout (5 s).
        replies = await asyncio.gather(
            api.http.post("/api/auth/login", json={"username": "admin", "password": server.admin_password}, timeout=30),
            api.http.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}, timeout=30),
            admin_api.post("/api/admin/users", json={"username": "later", "password": "password-123"}, timeout=30),
        )
        for reply in replies:
            assert reply.status_code == 503, reply.text
            assert reply.json()["error"]["code"] == "unavailable"
            assert int(reply.headers["Retry-After"]) >= 1
    finally:
        holder.rollback()
        holder.close()
    await api.login("admin", server.admin_password)
    assert (await api.http.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})).status_code == 200
    created = await admin_api.post("/api/admin/users", json={"username": "later", "password": "password-123"})
    assert created.status_code == 201, created.text


@both_backends
async def test_refreshes_beyond_max_pending_get_429_and_keep_their_token(database_url: str, tmp_path: Path) -> None:
    """A herd of refreshes (every page after a restart) beyond max_pending_refreshes: 429 with
    Retry-After, never 5xx; a refresh token refused that way is not spent and works afterwards."""
    settings = make_settings(database_url, tmp_path / "herd", max_pending_refreshes=1)
    async with running(settings) as server:
        await add_admin(server)
        async with Api(server) as api:
            sessions = [await api.login("admin", server.admin_password) for _ in range(12)]
            api.http.cookies.clear()  # each refresh names its own token
            replies = await asyncio.gather(*(
                api.http.post("/api/auth/refresh", json={"refresh_token": s["refresh_token"]}) for s in sessions
            ))
            busy = [s for s, r in zip(sessions, replies, strict=True) if r.status_code == 429]
            assert busy, "no refresh found the server busy; the test checks nothing"
            assert {r.status_code for r in replies} <= {200, 429}, [r.text for r in replies]
            for reply in replies:
                if reply.status_code == 429:
                    assert reply.json()["error"]["code"] == "rate_limited"
                    assert int(reply.headers["Retry-After"]) >= 1
            for session in busy:
                again = await api.http.post("/api/auth/refresh", json={"refresh_token": session["refresh_token"]})
                assert again.status_code == 200, again.text
