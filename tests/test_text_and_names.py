"""Issue 8: text the database cannot store (8.3), and names regardless of case or made of dots (8.9).

Contract 1.1, "Names": titles and messages may not contain NUL or unpaired
surrogates (bad_request); usernames and room names are unique regardless of
case, looked up regardless of case, keep the case they were made with, and
may not be dots alone. One person's unstorable text must never fail other
people's messages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import both_backends
from tests.helpers import Api, Chatter, Server, chatters, cheap_passwords

__all__ = ["chatters", "cheap_passwords"]  # fixtures
Connect = Callable[..., Awaitable[Chatter]]
pytestmark = pytest.mark.usefixtures("cheap_passwords")
PASSWORD = "password-123"
# NUL, a lone high surrogate, a lone low surrogate: what no database stores.
UNSTORABLE = {"nul": "\x00", "high": "\ud800", "low": "\udfff"}


async def send_json(api: Api, method: str, path: str, body: Any) -> httpx.Response:
    """A request (with the client's token, if any) whose body is JSON text written with escapes
    (lone surrogates as `\\ud800`, as any JSON encoder writes them)."""
    return await api.request(method, path, content=json.dumps(body).encode("ascii"),
                             headers={"Content-Type": "application/json"})


def bad_request(reply: httpx.Response) -> bool:
    return reply.status_code == 400 and reply.json()["error"]["code"] == "bad_request"


async def emit_all(chatter: Chatter, events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Emit every event back to back without waiting; the acks in send order."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in events]
    for (event, data), future in zip(events, futures, strict=True):
        await chatter.sio.emit(event, data, callback=lambda *args, f=future: f.done() or f.set_result(args[0]))
    return list(await asyncio.wait_for(asyncio.gather(*futures), 10))


# --- 8.3: unstorable text -----------------------------------------------------------------------


@both_backends
async def test_unstorable_text_is_refused_and_fails_nobody_else(
    chatters: Connect, admin_api: Api, backend: str
) -> None:
    """While bob posts 15 messages back to back, alice sends messages and client_ids with NUL and lone
    (high, low, reversed) surrogates, and join epochs with them: each gets bad_request, every one of
    bob's messages and alice's good ones (a real surrogate pair among them) is stored with gapless
    ids, and bob receives exactly those."""
    for name in ("alice", "bob"):
        await admin_api.create_user(name)
    await admin_api.create_room("red", public=True)
    alice = await chatters(await admin_api.token_for("alice"))
    bob = await chatters(await admin_api.token_for("bob"))
    for chatter in (alice, bob):
        assert (await chatter.call("join", {"room": "red"}))["ok"]

    bad_texts = ["x\ud800y", "\ud800", "\udbff", "\udc00", "\udfff", "a\x00b", "\x00", "\ude00\ud83d",
                 "ok\ud83d", "\udc00ok"]
    alices: list[tuple[str, dict[str, Any]]] = []
    for text in bad_texts:
        alices.append(("message", {"room": "red", "msg": text}))
        alices.append(("message", {"room": "red", "msg": "fine text", "client_id": f"c{text}"}))
    alices.append(("message", {"room": "red", "msg": "a real pair: \ud83d\ude00 and \U0001F600"}))
    bobs = [("message", {"room": "red", "msg": f"bob {n}"}) for n in range(15)]
    alice_acks, bob_acks = await asyncio.gather(emit_all(alice, alices), emit_all(bob, bobs))

    for (_, data), ack in zip(alices[:-1], alice_acks[:-1], strict=True):
        assert ack["ok"] is False and ack["error"] == "bad_request", (data, ack)
    assert alice_acks[-1]["ok"] is True, alice_acks[-1]
    assert all(a["ok"] for a in bob_acks), bob_acks
    ids = sorted([a["id"] for a in bob_acks] + [alice_acks[-1]["id"]])
    assert ids == list(range(1, 17))
    stored = (await admin_api.get("/api/rooms/red/messages")).json()["messages"]
    assert [m["id"] for m in stored] == ids
    assert [m["msg"] for m in stored if m["user"] == "bob"] == [f"bob {n}" for n in range(15)]
    assert [m["msg"] for m in stored if m["user"] == "alice"] == ["a real pair: \U0001F600 and \U0001F600"]
    got = await bob.wait_for("message", 16)
    assert [m["id"] for m in got] == ids

    accepted = []
    for text in UNSTORABLE.values():
        for epoch in (text, f"1{text}"):
            ack = await alice.call("join", {"room": "red", "since_id": 0, "epoch": epoch})
            if ack["ok"] is not False or ack["error"] != "bad_request":
                accepted.append((epoch, {k: ack.get(k) for k in ("ok", "error", "reset")}))
    assert accepted == [], "join epochs with unstorable text were not refused"
    assert (await alice.call("message", {"room": "red", "msg": "after all that"}))["id"] == 17


@both_backends
async def test_unstorable_text_over_http_is_refused(admin_api: Api, api: Api, backend: str) -> None:
    """Room titles (POST and PATCH), usernames and passwords (user creation, password change, sign-in),
    refresh and logout bodies with NUL or a lone surrogate: 400 bad_request, nothing changes, and the
    refused sign-ins lock nobody out. A title with a real emoji is stored."""
    await admin_api.create_user("alice")
    await admin_api.create_room("red", title="Red")
    alice = await admin_api.token_for("alice")
    for kind, bad in UNSTORABLE.items():
        cases = [
            ("POST", "/api/admin/rooms", {"name": f"t{kind}", "title": f"a{bad}b"}),
            ("POST", "/api/admin/rooms", {"name": f"t{kind}", "title": bad, "public": True}),
            ("PATCH", "/api/admin/rooms/red", {"title": f"Red{bad}"}),
            ("POST", "/api/admin/users", {"username": f"u{bad}", "password": PASSWORD}),
            ("POST", "/api/admin/users", {"username": f"u{kind}", "password": f"{PASSWORD}{bad}"}),
            ("PATCH", "/api/admin/users/alice", {"password": f"{PASSWORD}{bad}"}),
        ]
        for method, path, body in cases:
            reply = await send_json(admin_api, method, path, body)
            assert bad_request(reply), (kind, method, path, reply.status_code, reply.text)
        for body in ({"username": f"alice{bad}", "password": PASSWORD},
                     {"username": "alice", "password": f"{PASSWORD}{bad}"},
                     {"username": bad, "password": bad}):
            reply = await send_json(api, "POST", "/api/auth/login", body)
            assert bad_request(reply), (kind, body, reply.status_code, reply.text)
        for path in ("/api/auth/refresh", "/api/auth/logout"):
            reply = await send_json(api, "POST", path, {"refresh_token": f"abc{bad}"})
            assert bad_request(reply), (kind, path, reply.status_code, reply.text)
    rooms = (await admin_api.get("/api/admin/rooms")).json()["rooms"]
    assert rooms == [{"name": "red", "title": "Red", "public": False}]
    users = sorted(u["username"] for u in (await admin_api.get("/api/admin/users")).json()["users"])
    assert users == ["admin", "alice"]
    assert (await api.get("/api/me", headers={"Authorization": f"Bearer {alice}"})).status_code == 200
    await api.login("alice", PASSWORD)  # nine refused sign-ins counted nothing against her

    reply = await send_json(admin_api, "POST", "/api/admin/rooms", {"name": "smile", "title": "\ud83d\ude00 room"})
    assert reply.status_code == 201 and reply.json()["title"] == "\U0001F600 room"


@pytest.mark.parametrize("backend", ["postgres"])  # SQLite stores NUL; PostgreSQL refuses it
async def test_unstorable_names_in_routes_are_client_errors(admin_api: Api, backend: str) -> None:
    """A NUL in a route's user or room name (`%00`) is a client error (400 or 404) in the API's shape,
    never a 500, and changes nothing."""
    await admin_api.create_user("alice")
    await admin_api.create_room("red")
    cases = [
        ("PATCH", "/api/admin/users/ali%00ce", {"disabled": True}),
        ("DELETE", "/api/admin/users/ali%00ce", None),
        ("PATCH", "/api/admin/rooms/re%00d", {"title": "x"}),
        ("DELETE", "/api/admin/rooms/re%00d", None),
        ("GET", "/api/admin/rooms/re%00d/grants", None),
        ("PUT", "/api/admin/rooms/red/grants/ali%00ce", {"role": "read"}),
        ("PUT", "/api/admin/rooms/re%00d/grants/alice", {"role": "read"}),
        ("DELETE", "/api/admin/rooms/red/grants/ali%00ce", None),
        ("GET", "/api/rooms/re%00d/messages", None),
    ]
    wrong = []
    for method, path, body in cases:
        reply = await admin_api.request(method, path, **({"json": body} if body is not None else {}))
        code = reply.json()["error"]["code"] if reply.status_code >= 400 else None
        if reply.status_code not in (400, 404) or code not in ("bad_request", "not_found", "no_such_room"):
            wrong.append((method, path, reply.status_code, code))
    assert wrong == []
    users = {u["username"]: u for u in (await admin_api.get("/api/admin/users")).json()["users"]}
    assert users["alice"]["disabled"] is False
    assert (await admin_api.get("/api/admin/rooms/red/grants")).json()["grants"] == []


# --- 8.9: names ----------------------------------------------------------------------------------


@both_backends
async def test_names_are_unique_regardless_of_case(admin_api: Api, api: Api, backend: str) -> None:
    """`Alice`, `ALICE` and `ADMIN` conflict with alice and admin (409), as do `RED`/`Red` with red,
    also when created at the same moment; names keep the case they were made with."""
    await admin_api.create_user("alice")
    await admin_api.create_room("red")
    for name in ("Alice", "ALICE", "aLiCe", "ADMIN", "Admin"):
        reply = await admin_api.post("/api/admin/users", json={"username": name, "password": PASSWORD})
        assert (reply.status_code, reply.json()["error"]["code"]) == (409, "conflict"), (name, reply.text)
    for name in ("RED", "Red", "rEd"):
        reply = await admin_api.post("/api/admin/rooms", json={"name": name})
        assert (reply.status_code, reply.json()["error"]["code"]) == (409, "conflict"), (name, reply.text)

    racing = await asyncio.gather(*(
        admin_api.post("/api/admin/users", json={"username": name, "password": PASSWORD})
        for name in ("carol", "CAROL", "Carol", "cAROL")))
    assert sorted(r.status_code for r in racing) == [201, 409, 409, 409], [r.text for r in racing]
    racing = await asyncio.gather(*(
        admin_api.post("/api/admin/rooms", json={"name": name}) for name in ("blue", "BLUE", "Blue")))
    assert sorted(r.status_code for r in racing) == [201, 409, 409], [r.text for r in racing]

    await admin_api.create_user("Bob")
    users = [u["username"] for u in (await admin_api.get("/api/admin/users")).json()["users"]]
    assert sorted(u.lower() for u in users) == ["admin", "alice", "bob", "carol"]
    assert "Bob" in users
    rooms = [r["name"].lower() for r in (await admin_api.get("/api/admin/rooms")).json()["rooms"]]
    assert sorted(rooms) == ["blue", "red"]
    for typed, stored in (("bob", "Bob"), ("BOB", "Bob"), ("ALICE", "alice")):
        await api.login(typed, PASSWORD)
        assert (await api.get("/api/me")).json()["username"] == stored


async def test_every_lookup_ignores_case(
    admin_api: Api, api: Api, chatters: Connect, server: Server
) -> None:
    """Routes `/api/admin/users/ALICE`, `/api/admin/rooms/RED/grants/ALICE`, `/api/rooms/RED/messages`
    and events `join {room: "RED"}`, `message {room: "Red"}` reach alice and red, and every reply and
    event names them as stored."""
    await admin_api.create_user("alice")
    await admin_api.create_room("red")
    reply = await admin_api.put("/api/admin/rooms/RED/grants/ALICE", json={"role": "write"})
    assert reply.json() == {"room": "red", "username": "alice", "role": "write"}
    assert (await admin_api.get("/api/admin/rooms/Red/grants")).json()["grants"] == [
        {"username": "alice", "role": "write"}]
    reply = await admin_api.patch("/api/admin/rooms/RED", json={"title": "The red room"})
    assert reply.json() == {"name": "red", "title": "The red room", "public": False}

    alice = await chatters(await admin_api.token_for("ALICE"))
    [welcome] = await alice.wait_for("welcome")
    assert welcome["user"] == "alice"
    joined = await alice.call("join", {"room": "RED"})
    assert joined["ok"] is True and joined["room"] == "red" and joined["members"] == ["alice"]
    again = await alice.call("join", {"room": "red"})  # the same room: no second membership
    assert again["ok"] is True and again["members"] == ["alice"]
    ack = await alice.call("message", {"room": "Red", "msg": "hello"})
    assert ack["ok"] is True
    [message] = await alice.wait_for("message")
    assert (message["room"], message["user"]) == ("red", "alice")
    await api.login("Alice", PASSWORD)
    page = (await api.get("/api/rooms/RED/messages")).json()["messages"]
    assert [(m["room"], m["msg"]) for m in page] == [("red", "hello")]
    assert [r["name"] for r in (await api.get("/api/rooms")).json()["rooms"]] == ["red"]
    assert (await alice.call("leave", {"room": "rEd"})) == {"ok": True}
    assert (await alice.call("join", {"room": "RED"}))["room"] == "red"

    reply = await admin_api.patch("/api/admin/users/ALICE", json={"is_admin": True})
    assert reply.status_code == 200 and reply.json()["username"] == "alice"
    assert (await admin_api.patch("/api/admin/users/Alice", json={"is_admin": False})).status_code == 200
    assert (await admin_api.delete("/api/admin/rooms/RED/grants/Alice")).status_code == 204
    [kicked] = await alice.wait_for("kicked")
    assert kicked == {"room": "red", "reason": "revoked"}
    assert (await admin_api.delete("/api/admin/users/ALICE")).status_code == 204
    await alice.wait_disconnected()
    assert (await admin_api.delete("/api/admin/rooms/RED")).status_code == 204
    assert (await admin_api.get("/api/admin/users")).json()["users"] == [
        {"username": "admin", "is_admin": True, "disabled": False}]
    assert (await admin_api.get("/api/admin/rooms")).json()["rooms"] == []


async def test_dots_only_names_are_refused(admin_api: Api, chatters: Connect) -> None:
    """`.`, `..` and longer runs of dots are refused as user and room names (400), in events too;
    names with dots and something else are fine and can be managed through the routes."""
    for name in (".", "..", "...", "." * 32):
        reply = await admin_api.post("/api/admin/users", json={"username": name, "password": PASSWORD})
        assert bad_request(reply), (name, reply.text)
    for name in (".", "..", "...", "." * 64):
        reply = await admin_api.post("/api/admin/rooms", json={"name": name})
        assert bad_request(reply), (name, reply.text)
    admin = await chatters(admin_api.token)
    for name in (".", ".."):
        ack = await admin.call("join", {"room": name})
        assert ack["ok"] is False and ack["error"] == "bad_request", (name, ack)
    assert sorted(u["username"] for u in (await admin_api.get("/api/admin/users")).json()["users"]) == ["admin"]
    assert (await admin_api.get("/api/admin/rooms")).json()["rooms"] == []

    await admin_api.create_user("..a")
    await admin_api.create_room(".hidden")
    await admin_api.create_room("a..b")
    assert (await admin_api.put("/api/admin/rooms/.hidden/grants/..a", json={"role": "read"})).status_code == 200
    assert (await admin_api.patch("/api/admin/users/..a", json={"disabled": True})).status_code == 200
    assert (await admin.call("join", {"room": "a..b"}))["room"] == "a..b"
    assert (await admin_api.delete("/api/admin/rooms/.hidden")).status_code == 204
