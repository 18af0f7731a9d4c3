"""Issue 8: identity and access as an unlucky user meets them.

- 8.7 Tokens outlive neither their account nor its password (contract 1.1): a
  deleted account's token does not work for a new account of the same name,
  sign-out ends the access token and that session's sockets (only that
  session's), a password change or disabling ends every token and socket,
  and a reused refresh token ends its whole family.
- 8.2 A dropped admin request never leaves a change half done: revoking,
  disabling, deleting and making a room private take their full effect
  (kicks, disconnects, refusals) even when the admin's client disconnects
  3-7 ms after sending.
- 8.6 The sign-in throttle counts before it checks, per account, and an
  address full of failures locks out only accounts with failures of their own.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from quart_rooms.storage import queries
from tests.conftest import add_admin, both_backends, make_settings, running
from tests.helpers import Api, Chatter, Server, chatters, cheap_passwords, refusal
from tests.test_redis import redis_url

__all__ = ["chatters", "cheap_passwords", "redis_url"]  # fixtures
Connect = Callable[..., Awaitable[Chatter]]
PASSWORD = "password-123"


async def sign_in(server: Server, username: str, password: str = PASSWORD) -> dict[str, Any]:
    """A fresh sign-in session from a client with no cookies: {access_token, refresh_token, ...}."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        reply = await http.post("/api/auth/login", json={"username": username, "password": password})
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def call(server: Server, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
    """One request from a client with no cookies (the refresh cookie must not stand in for a body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await http.request(method, path, headers=headers, **kwargs)


async def token_works(server: Server, token: str) -> bool:
    """Whether the access token is still honoured over HTTP (GET /api/me); a refusal must be 401."""
    reply = await call(server, "GET", "/api/me", token=token)
    assert reply.status_code in (200, 401), reply.text
    if reply.status_code == 401:
        assert reply.json()["error"]["code"] in ("unauthorized", "token_expired")
    return reply.status_code == 200


async def user_id(server: Server, username: str) -> int:
    async with server.services.db.reads() as session:
        user = await queries.get_user(session, username)
    assert user is not None
    return user.id


# --- 8.7: tokens ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("cheap_passwords")
async def test_a_deleted_accounts_token_does_not_work_for_a_new_account_of_that_name(
    server: Server, admin_api: Api, chatters: Connect
) -> None:
    """alice's token, after alice is deleted and an account named alice (then Alice) is made again:
    refused on connect (unauthorized) and over HTTP, as is her refresh token; the new account's own
    tokens work. Account ids are never handed out again (SQLite too)."""
    await admin_api.create_room("red", public=True)
    await admin_api.create_user("alice")  # the newest account: the id SQLite used to hand out again
    first = await sign_in(server, "alice")
    old_id = await user_id(server, "alice")
    live = await chatters(first["access_token"])
    assert (await live.call("join", {"room": "red"}))["ok"]

    assert (await admin_api.delete("/api/admin/users/alice")).status_code == 204
    [ended] = await live.wait_for("session_expired")
    assert ended == {"reason": "account_deleted"}
    await live.wait_disconnected()

    older = [first]
    for name in ("alice", "Alice"):
        await admin_api.create_user(name)
        assert await user_id(server, name) != old_id  # never handed out again
        for old in older:
            assert await refusal(server.url, old["access_token"]) == "unauthorized"
            assert not await token_works(server, old["access_token"])
            assert (await call(server, "POST", "/api/auth/refresh",
                               json={"refresh_token": old["refresh_token"]})).status_code == 401
            assert (await call(server, "GET", "/api/rooms/red/messages", token=old["access_token"])).status_code == 401
        fresh = await sign_in(server, name.lower())
        assert (await call(server, "GET", "/api/me", token=fresh["access_token"])).json()["username"] == name
        chatter = await chatters(fresh["access_token"])
        assert (await chatter.call("join", {"room": "red"}))["ok"]
        assert (await chatter.call("message", {"room": "red", "msg": f"I am the new {name}"}))["ok"]
        await chatter.close()
        assert (await admin_api.delete(f"/api/admin/users/{name.upper()}")).status_code == 204
        older.append(fresh)
    history = (await admin_api.get("/api/rooms/red/messages")).json()["messages"]
    assert [m["msg"] for m in history] == ["I am the new alice", "I am the new Alice"]


@pytest.mark.usefixtures("cheap_passwords")
async def test_sign_out_with_only_the_access_token_ends_that_session(
    server: Server, admin_api: Api, chatters: Connect
) -> None:
    """alice signed in twice (two sessions, three sockets). Sign-out with only session one's access
    token (no refresh token, no cookie): 204; its access token, its refresh token and its two live
    sockets end (`session_expired {reason: signed_out}`); session two's socket stays and works.
    Then sign-out with session two's refresh token in the body ends session two, and the page's
    sign-out with only its refresh cookie ends the page's session."""
    await admin_api.create_user("alice")
    await admin_api.create_room("red", public=True)
    one, two = await sign_in(server, "alice"), await sign_in(server, "alice")
    one_a, one_b, two_a = (await chatters(one["access_token"]), await chatters(one["access_token"]),
                           await chatters(two["access_token"]))
    for chatter in (one_a, one_b, two_a):
        assert (await chatter.call("join", {"room": "red"}))["ok"]

    reply = await call(server, "POST", "/api/auth/logout", token=one["access_token"])
    assert reply.status_code == 204, reply.text
    for chatter in (one_a, one_b):
        [ended] = await chatter.wait_for("session_expired")
        assert ended == {"reason": "signed_out"}
        await chatter.wait_disconnected()
    assert not await token_works(server, one["access_token"])
    assert await refusal(server.url, one["access_token"]) == "unauthorized"
    assert (await call(server, "POST", "/api/auth/refresh",
                       json={"refresh_token": one["refresh_token"]})).status_code == 401
    assert (await two_a.call("refresh", {"token": one["access_token"]}))["error"] == "unauthorized"

    await two_a.settle()
    assert two_a.sio.connected and two_a.events["session_expired"] == []
    assert (await two_a.call("message", {"room": "red", "msg": "still here"}))["ok"]
    assert await token_works(server, two["access_token"])

    reply = await call(server, "POST", "/api/auth/logout", json={"refresh_token": two["refresh_token"]})
    assert reply.status_code == 204
    [ended] = await two_a.wait_for("session_expired")
    assert ended == {"reason": "signed_out"}
    await two_a.wait_disconnected()
    assert not await token_works(server, two["access_token"])

    async with Api(server) as page:  # the page: signs out with its HttpOnly refresh cookie alone
        await page.login("alice", PASSWORD)
        tab = await chatters(page.token)
        await tab.wait_for("welcome")
        assert (await page.http.post("/api/auth/logout")).status_code == 204
        assert (await tab.wait_for("session_expired")) == [{"reason": "signed_out"}]
        await tab.wait_disconnected()
        assert not await token_works(server, str(page.token))


@pytest.mark.usefixtures("cheap_passwords")
async def test_password_change_and_disabling_end_every_token_and_socket(
    server: Server, admin_api: Api, chatters: Connect
) -> None:
    """A new password ends alice's access and refresh tokens and closes her sockets with
    `session_expired {reason: account_changed}`; so does disabling, and re-enabling brings no old
    token back. A change that ends nothing (is_admin) keeps her tokens and sockets."""
    await admin_api.create_user("alice")
    await admin_api.create_room("red", public=True)
    before = await sign_in(server, "alice")
    socket = await chatters(before["access_token"])
    assert (await socket.call("join", {"room": "red"}))["ok"]

    reply = await admin_api.patch("/api/admin/users/alice", json={"is_admin": True})
    assert reply.status_code == 200 and reply.json()["is_admin"] is True
    await socket.settle()
    assert socket.sio.connected and socket.events["session_expired"] == []
    assert await token_works(server, before["access_token"])
    assert (await socket.call("message", {"room": "red", "msg": "admin now"}))["ok"]
    assert (await admin_api.patch("/api/admin/users/alice", json={"is_admin": False})).status_code == 200

    reply = await admin_api.patch("/api/admin/users/ALICE", json={"password": "a-new-password"})
    assert reply.status_code == 200, reply.text
    [ended] = await socket.wait_for("session_expired")
    assert ended == {"reason": "account_changed"}
    await socket.wait_disconnected()
    assert not await token_works(server, before["access_token"])
    assert await refusal(server.url, before["access_token"]) == "unauthorized"
    assert (await call(server, "POST", "/api/auth/refresh",
                       json={"refresh_token": before["refresh_token"]})).status_code == 401
    wrong = await call(server, "POST", "/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert wrong.status_code == 401

    after = await sign_in(server, "alice", "a-new-password")
    socket = await chatters(after["access_token"])
    assert (await socket.call("join", {"room": "red"}))["ok"]
    assert (await admin_api.patch("/api/admin/users/alice", json={"disabled": True})).status_code == 200
    [ended] = await socket.wait_for("session_expired")
    assert ended == {"reason": "account_changed"}
    await socket.wait_disconnected()
    assert (await call(server, "POST", "/api/auth/login",
                       json={"username": "alice", "password": "a-new-password"})).status_code == 401
    assert (await admin_api.patch("/api/admin/users/alice", json={"disabled": False})).status_code == 200
    assert not await token_works(server, after["access_token"])
    assert await refusal(server.url, after["access_token"]) == "unauthorized"
    assert (await call(server, "POST", "/api/auth/refresh",
                       json={"refresh_token": after["refresh_token"]})).status_code == 401
    assert await token_works(server, (await sign_in(server, "alice", "a-new-password"))["access_token"])


@pytest.mark.usefixtures("cheap_passwords")
async def test_a_reused_refresh_token_ends_its_family_and_closes_its_sockets(
    server: Server, admin_api: Api, chatters: Connect
) -> None:
    """alice refreshes R1 into R2; someone replays R1: 401, and every token and socket of that
    sign-in (R2, both access tokens, both sockets) ends; her other sign-in is untouched."""
    await admin_api.create_user("alice")
    first = await sign_in(server, "alice")
    other = await sign_in(server, "alice")
    reply = await call(server, "POST", "/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reply.status_code == 200
    second = reply.json()
    family = [await chatters(first["access_token"]), await chatters(second["access_token"])]
    bystander = await chatters(other["access_token"])
    for chatter in (*family, bystander):
        await chatter.wait_for("welcome")

    replay = await call(server, "POST", "/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    for chatter in family:
        await chatter.wait_for("session_expired")
        await chatter.wait_disconnected()
    for token in (first["access_token"], second["access_token"]):
        assert not await token_works(server, token)
    assert (await call(server, "POST", "/api/auth/refresh",
                       json={"refresh_token": second["refresh_token"]})).status_code == 401
    await bystander.settle()
    assert bystander.sio.connected and bystander.events["session_expired"] == []
    assert await token_works(server, other["access_token"])
    assert (await call(server, "POST", "/api/auth/refresh",
                       json={"refresh_token": other["refresh_token"]})).status_code == 200


@pytest.mark.parametrize("backend", ["postgres"])  # several nodes share a database server
@pytest.mark.usefixtures("cheap_passwords")
async def test_ended_sessions_close_sockets_on_every_node(redis_url: str, database_url: str, tmp_path: Path) -> None:
    """Two servers: alice has a socket on each for each of two sign-ins. Signing out one sign-in through
    A closes its sockets on A and B (and no other); a new password set through B closes the rest."""
    shared = {"redis_url": redis_url, "redis_channel": f"test-{uuid.uuid4().hex}",
              "jwt_secret": secrets.token_urlsafe(32)}
    async with running(make_settings(database_url, tmp_path / "a", **shared)) as a, \
            running(make_settings(database_url, tmp_path / "b", **shared)) as b, Api(a) as admin:
        await add_admin(a)
        await admin.login("admin", a.admin_password)
        await admin.create_user("alice")
        one, two = await sign_in(a, "alice"), await sign_in(b, "alice")
        sockets = {(s, n): Chatter(server.url) for s, server in (("a", a), ("b", b)) for n in ("one", "two")}
        try:
            for (_, n), chatter in sockets.items():
                await chatter.connect((one if n == "one" else two)["access_token"])
                await chatter.wait_for("welcome")
            assert (await call(a, "POST", "/api/auth/logout", token=one["access_token"])).status_code == 204
            for node in ("a", "b"):
                assert (await sockets[(node, "one")].wait_for("session_expired")) == [{"reason": "signed_out"}]
                await sockets[(node, "one")].wait_disconnected()
            assert not await token_works(b, one["access_token"])
            await sockets[("b", "two")].settle()
            assert all(sockets[(node, "two")].sio.connected for node in ("a", "b"))
            async with Api(b) as admin_b:
                await admin_b.login("admin", b.admin_password)
                reply = await admin_b.patch("/api/admin/users/alice", json={"password": "another-password"})
                assert reply.status_code == 200
            for node in ("a", "b"):
                assert (await sockets[(node, "two")].wait_for("session_expired")) == [{"reason": "account_changed"}]
                await sockets[(node, "two")].wait_disconnected()
            assert not await token_works(a, two["access_token"])
        finally:
            for chatter in sockets.values():
                await chatter.close()


# --- 8.2: dropped admin requests -----------------------------------------------------------------


async def drop(server: Server, token: str, method: str, path: str, body: Any, delay_ms: int) -> None:
    """Write one admin request over raw TCP and go away `delay_ms` later without reading the reply
    (a FIN on odd delays, a reset on even ones).

    A request with the same token first, so that its account is in the server's cache (as it is on
    a busy server) and the dropped request gets as far as starting its change within the delay."""
    assert (await call(server, "GET", "/api/me", token=token)).status_code == 200
    port = urlsplit(server.url).port
    payload = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + payload)
    await writer.drain()
    await asyncio.sleep(delay_ms / 1000)
    if delay_ms % 2:
        writer.close()
    else:
        writer.transport.abort()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


async def arrives(chatter: Chatter, event: str, within: float = 1.0) -> bool:
    """Whether the event arrives within `within` seconds (half the change log's 2 s poll)."""
    try:
        await chatter.wait_for(event, timeout=within)
    except TimeoutError:
        return False
    return True


async def gets(chatter: Chatter, event: str, value: Any = None, within: float = 1.0) -> bool:
    """Whether an event (equal to `value`, when given) arrives within `within` seconds."""
    for _ in range(int(within / 0.02)):
        if any(value is None or got == value for got in chatter.events[event]):
            return True
        await asyncio.sleep(0.02)
    return False


DELAYS = (3, 4, 5, 6, 7)


@both_backends
@pytest.mark.usefixtures("cheap_passwords")
async def test_a_dropped_revoke_still_kicks(server: Server, admin_api: Api, chatters: Connect) -> None:
    """DELETE grant whose client goes away 3-7 ms after sending: once the grant is gone from storage
    alice's socket has been kicked and told `access {role: null}`, her posts get not_in_room, and a
    fresh socket's join is forbidden. (A request dropped before it took effect must change nothing.)"""
    await admin_api.create_user("alice")
    await admin_api.create_room("red")
    await admin_api.grant("red", "alice")
    token = await admin_api.token_for("alice")
    applied = 0
    for delay in DELAYS:
        alice = await chatters(token)
        assert (await alice.call("join", {"room": "red"}))["ok"]
        await drop(server, str(admin_api.token), "DELETE", "/api/admin/rooms/red/grants/alice", None, delay)
        kicked = await arrives(alice, "kicked")
        grants = (await admin_api.get("/api/admin/rooms/red/grants")).json()["grants"]
        if not kicked:
            assert grants == [{"username": "alice", "role": "write"}], f"{delay} ms: revoked but not kicked"
            assert (await alice.call("message", {"room": "red", "msg": "still allowed"}))["ok"]
            continue
        applied += 1
        assert grants == [], f"{delay} ms: kicked but the grant is still stored"
        assert alice.events["kicked"] == [{"room": "red", "reason": "revoked"}]
        assert {"room": "red", "role": None} in (await alice.wait_for("access"))
        assert (await alice.call("message", {"room": "red", "msg": "x"}))["error"] == "not_in_room"
        assert (await alice.call("join", {"room": "red"}))["error"] == "forbidden"
        fresh = await chatters(token)
        assert (await fresh.call("join", {"room": "red"}))["error"] == "forbidden"
        assert (await call(server, "GET", "/api/rooms/red/messages", token=token)).status_code == 403
        await alice.close()
        await fresh.close()
        await admin_api.grant("red", "alice")
    assert applied >= 3, f"only {applied} of {len(DELAYS)} dropped revokes took effect"


@pytest.mark.usefixtures("cheap_passwords")
async def test_dropped_account_and_room_changes_take_full_effect(
    server: Server, admin_api: Api, chatters: Connect
) -> None:
    """Disabling, deleting, a new password, signing out, making a room private, each by a request
    dropped 3-7 ms after it was sent: exactly when the change is stored, the user's socket is closed
    (with the right reason) and the token refused, or the member without a grant is kicked."""
    kinds = {"d": "account_changed", "x": "account_deleted", "w": "account_changed", "o": "signed_out"}
    # Each kind of change at two of the delays, every delay used twice.
    trials = [(kind, DELAYS[(i + j * 3) % len(DELAYS)]) for i, kind in enumerate("dxwop") for j in range(2)]
    names = [f"{kind}{delay}" for kind, delay in trials if kind != "p"]
    for name in names:
        await admin_api.create_user(name)
    rooms_made = [f"p{delay}" for kind, delay in trials if kind == "p"]
    for room in rooms_made:
        await admin_api.create_room(room, public=True)
    await admin_api.create_user("bob")
    bob = await chatters(await admin_api.token_for("bob"))
    tokens = {name: await admin_api.token_for(name) for name in names}
    sockets = {name: await chatters(tokens[name]) for name in names}
    for room in rooms_made:
        assert (await bob.call("join", {"room": room}))["ok"]
    applied = 0
    admin = str(admin_api.token)

    for kind, delay in trials:
        name = f"{kind}{delay}"
        token, method, path, body = {
            "d": (admin, "PATCH", f"/api/admin/users/{name}", {"disabled": True}),
            "x": (admin, "DELETE", f"/api/admin/users/{name}", None),
            "w": (admin, "PATCH", f"/api/admin/users/{name}", {"password": "another-password"}),
            "o": (tokens.get(name, ""), "POST", "/api/auth/logout", None),
            "p": (admin, "PATCH", f"/api/admin/rooms/{name}", {"public": False}),
        }[kind]
        await drop(server, token, method, path, body, delay)
        if kind == "p":
            kicked = await gets(bob, "kicked", {"room": name, "reason": "revoked"})
            rooms = {r["name"]: r for r in (await admin_api.get("/api/admin/rooms")).json()["rooms"]}
            private = not rooms[name]["public"]
            assert kicked == private, f"{name}: stored private {private}, bob kicked {kicked}"
            if private:
                applied += 1
                assert (await bob.call("message", {"room": name, "msg": "x"}))["error"] == "not_in_room"
                assert (await bob.call("join", {"room": name}))["error"] == "forbidden"
            continue
        ended = await gets(sockets[name], "session_expired")
        users = {u["username"]: u for u in (await admin_api.get("/api/admin/users")).json()["users"]}
        if kind == "x":
            changed = name not in users
        elif kind == "d":
            changed = users[name]["disabled"]
        else:  # a new password or a sign-out shows in the token only
            changed = not await token_works(server, tokens[name])
        assert ended == changed, f"{name}: change stored {changed}, socket ended {ended}"
        if changed:
            applied += 1
            assert sockets[name].events["session_expired"] == [{"reason": kinds[kind]}]
            await sockets[name].wait_disconnected()
            assert not await token_works(server, tokens[name])
            assert await refusal(server.url, tokens[name]) == "unauthorized"
        else:
            assert sockets[name].sio.connected and await token_works(server, tokens[name])
    assert applied >= 6, f"only {applied} of {len(trials)} dropped changes took effect"


# --- 8.6: the sign-in throttle ---------------------------------------------------------------------


async def attempts(server: Server, pairs: list[tuple[str, str]]) -> list[httpx.Response]:
    """Sign-in attempts all at once, each on its own connection."""
    limits = httpx.Limits(max_connections=len(pairs) + 1)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
        return list(await asyncio.gather(*(
            http.post("/api/auth/login", json={"username": u, "password": p}) for u, p in pairs)))


def retry_after(reply: httpx.Response) -> int:
    assert reply.status_code == 429, reply.text
    assert reply.json()["error"]["code"] == "rate_limited"
    value = int(reply.headers["Retry-After"])
    assert value >= 1
    return value


async def test_concurrent_wrong_passwords_are_checked_at_most_the_limit(server: Server, admin_api: Api) -> None:
    """60 wrong passwords for one account at once (as alice, ALICE and Alice, one account): at most
    login_failures_per_account (5) are checked (401); the rest get 429 with Retry-After."""
    assert server.services.settings.login_failures_per_account == 5
    await admin_api.create_user("alice")
    names = ["alice", "ALICE", "Alice"]
    replies = await attempts(server, [(names[n % 3], f"wrong-{n}") for n in range(60)])
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {401, 429}, statuses
    assert 1 <= statuses.count(401) <= 5, statuses
    for reply in replies:
        if reply.status_code == 429:
            retry_after(reply)
    again = await attempts(server, [("alice", "wrong-again")])
    retry_after(again[0])


@pytest.mark.parametrize("settings_overrides", [{"login_failures_per_address": 5}])
async def test_made_up_names_from_one_address_lock_out_only_accounts_with_failures(
    server: Server, admin_api: Api
) -> None:
    """Failed sign-ins with made-up names from one address, past the address limit: bob, with no
    failures of his own, still signs in (200); carol, once she has a failure of her own, is refused
    from that address (429), even with her right password."""
    for name in ("bob", "carol", "dave"):
        await admin_api.create_user(name)
    sprayed = await attempts(server, [(f"nobody{n}", "guess-1234") for n in range(8)])
    assert [r.status_code for r in sprayed] == [401] * 8
    assert (await attempts(server, [("bob", PASSWORD)]))[0].status_code == 200
    assert (await attempts(server, [("carol", "not-her-password")]))[0].status_code == 401
    retry_after((await attempts(server, [("carol", PASSWORD)]))[0])
    retry_after((await attempts(server, [("carol", "another-guess")]))[0])
    assert (await attempts(server, [("DAVE", PASSWORD)]))[0].status_code == 200
    assert (await attempts(server, [("bob", PASSWORD)]))[0].status_code == 200


async def test_concurrent_right_passwords_are_never_refused(server: Server, admin_api: Api) -> None:
    """Contract: successful sign-ins are never counted nor refused. Twelve sign-ins of alice with her
    right password at once (a load test, a user opening tabs): all 200."""
    await admin_api.create_user("alice")
    replies = await attempts(server, [("alice", PASSWORD)] * 12)
    statuses = [r.status_code for r in replies]
    assert statuses == [200] * 12, (statuses, [r.json()["error"] for r in replies if r.status_code != 200][:1])


@pytest.mark.usefixtures("cheap_passwords")
@both_backends
async def test_a_re_created_account_owns_none_of_the_old_ones_messages(
    server: Server, admin_api: Api, chatters: Connect
) -> None:
    """bob posts with client_id "1" and is deleted; a new bob (the same id on SQLite) posting with
    client_id "1" stores a new message (not the old one's ack), and may not delete old bob's messages."""
    await admin_api.create_room("priv")
    await admin_api.create_room("lobby", public=True)
    await admin_api.create_user("bob")
    await admin_api.grant("priv", "bob")
    old = await chatters((await sign_in(server, "bob"))["access_token"])
    assert (await old.call("join", {"room": "priv"}))["ok"]
    first = await old.call("message", {"room": "priv", "msg": "old bob", "client_id": "1"})
    assert first["ok"] and first["id"] == 1
    assert (await admin_api.delete("/api/admin/users/bob")).status_code == 204
    await admin_api.create_user("bob")
    token = (await sign_in(server, "bob"))["access_token"]
    new = await chatters(token)
    assert (await new.call("join", {"room": "lobby"}))["ok"]
    again = await new.call("message", {"room": "lobby", "msg": "new bob", "client_id": "1"})
    assert again["ok"] and again["id"] == 1 and again["ts"] != first["ts"]
    [seen] = await new.wait_for("message")
    assert (seen["room"], seen["msg"]) == ("lobby", "new bob")
    # the new bob is no author of the old bob's messages (an admin posts in lobby, the new bob cannot delete it)
    refused = await call(server, "DELETE", "/api/rooms/priv/messages/1", token=token)
    assert refused.status_code == 403
    repeat = await new.call("message", {"room": "lobby", "msg": "new bob", "client_id": "1"})
    assert repeat["id"] == again["id"]  # its own retries still answer its own first id


async def test_a_token_with_an_id_beyond_64_bits_is_refused(server: Server) -> None:
    """A correctly signed token whose uid overflows storage is unauthorized, not a 500."""
    import time

    import jwt

    settings = server.services.settings
    now = int(time.time())
    token = jwt.encode(
        {"sub": "admin", "iat": now, "nbf": now, "exp": now + 60, "iss": settings.jwt_issuer,
         "aud": settings.jwt_audience, "jti": "j", "uid": 2**80, "ver": 0, "sid": "s"},
        server.services.tokens._signing_key, algorithm="HS256",
    )
    assert (await call(server, "GET", "/api/me", token=token)).status_code == 401
    assert await refusal(server.url, token) == "unauthorized"
