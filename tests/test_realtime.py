"""Socket.IO end to end: real AsyncClients against the real server on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest

from tests.conftest import both_backends
from tests.helpers import Api, Chatter, Server, chatters, refusal

Connect = Callable[..., Awaitable[Chatter]]


@pytest.fixture
def connect(chatters: Connect) -> Connect:
    """Open a Chatter with a token; every one is closed after the test (helpers.chatters)."""
    return chatters


@pytest.fixture
async def people(admin_api: Api) -> dict[str, str]:
    """alice and bob with write in 'red', carol with write in 'blue': their access tokens."""
    for name in ("alice", "bob", "carol"):
        await admin_api.create_user(name)
    await admin_api.create_room("red")
    await admin_api.create_room("blue")
    await admin_api.grant("red", "alice")
    await admin_api.grant("red", "bob")
    await admin_api.grant("blue", "carol")
    return {name: await admin_api.token_for(name) for name in ("alice", "bob", "carol")}


async def test_welcome_after_connect(connect: Connect, people: dict[str, str]) -> None:
    """A connected socket is greeted with its user and the limits."""
    alice = await connect(people["alice"])
    [welcome] = await alice.wait_for("welcome")
    assert welcome["user"] == "alice"
    assert welcome["is_admin"] is False
    assert 0 < welcome["expires_in"] <= 300
    assert welcome["limits"] == {"max_message_chars": 2000, "messages_per_10s": 20, "max_recovery": 1000}


async def test_bad_tokens_are_refused(server: Server, people: dict[str, str]) -> None:
    """No token, garbage, a tampered token, alg none and an expired token: all refused with a code."""
    settings = server.services.settings
    good = people["alice"]
    header, payload, signature = good.split(".")
    tampered = ".".join([header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")])
    none_token = jwt.encode(
        {"sub": "admin", "iat": int(time.time()), "nbf": int(time.time()), "exp": int(time.time()) + 60,
         "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "jti": "x"},
        key=None, algorithm="none",
    )
    other_key = jwt.encode(
        {"sub": "admin", "iat": int(time.time()), "nbf": int(time.time()), "exp": int(time.time()) + 60,
         "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "jti": "x"},
        key="another-secret-of-enough-length-32b", algorithm="HS256",
    )
    secret = server.services.tokens._signing_key
    expired = jwt.encode(
        {"sub": "alice", "iat": int(time.time()) - 600, "nbf": int(time.time()) - 600,
         "exp": int(time.time()) - 300, "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "jti": "y",
         "uid": 2, "ver": 0, "sid": "s"},
        key=secret, algorithm="HS256",
    )
    cases = [(None, "unauthorized"), ("garbage", "unauthorized"), (tampered, "unauthorized"),
             (none_token, "unauthorized"), (other_key, "unauthorized"), (expired, "token_expired")]
    for token, code in cases:
        assert await refusal(server.url, token) == code, token


async def test_bearer_header_works(connect: Connect, people: dict[str, str]) -> None:
    """The token may come in an Authorization header instead of `auth`."""
    alice = await connect(None, headers={"Authorization": f"Bearer {people['alice']}"})
    [welcome] = await alice.wait_for("welcome")
    assert welcome["user"] == "alice"


@both_backends
async def test_two_users_talk_and_a_third_sees_nothing(connect: Connect, people: dict[str, str]) -> None:
    """alice and bob in red see each other's messages; carol in blue sees none of them."""
    alice, bob, carol = [await connect(people[n]) for n in ("alice", "bob", "carol")]
    joined = await alice.call("join", {"room": "red"})
    assert joined["ok"] is True and joined["role"] == "write" and joined["members"] == ["alice"]
    assert joined["history"] == []
    joined = await bob.call("join", {"room": "red"})
    assert joined["members"] == ["alice", "bob"]
    assert (await carol.call("join", {"room": "blue"}))["ok"] is True
    [presence] = await alice.wait_for("presence")
    assert presence == {"room": "red", "user": "bob", "action": "joined"}

    ack = await alice.call("message", {"room": "red", "msg": "hello bob", "username": "bob", "user": "bob"})
    assert ack["ok"] is True and ack["id"] == 1 and ack["ts"].endswith("Z")
    ack2 = await bob.call("message", {"room": "red", "msg": "hi alice"})
    assert ack2["id"] == 2
    for chatter in (alice, bob):
        got = await chatter.wait_for("message", 2)
        assert [(m["id"], m["user"], m["msg"], m["room"]) for m in got] == [
            (1, "alice", "hello bob", "red"), (2, "bob", "hi alice", "red")]
    await carol.settle()
    assert carol.events["message"] == []

    await bob.call("leave", {"room": "red"})
    [_, left] = await alice.wait_for("presence", 2)
    assert left == {"room": "red", "user": "bob", "action": "left"}


async def test_forbidden_unknown_and_sid_rooms_look_the_same(connect: Connect, people: dict[str, str]) -> None:
    """A room that is not yours, one that does not exist and another socket's sid room: all `forbidden`."""
    alice = await connect(people["alice"])
    carol = await connect(people["carol"])
    assert await alice.call("join", {"room": "blue"}) == {"ok": False, "error": "forbidden",
                                                          "message": "You may not enter this room."}
    unknown = await alice.call("join", {"room": "nowhere"})
    assert unknown["error"] == "forbidden"
    sid_room = await alice.call("join", {"room": carol.sio.get_sid("/")})
    assert sid_room["ok"] is False
    assert (await alice.call("message", {"room": "blue", "msg": "sneaky"}))["error"] == "not_in_room"
    await carol.call("join", {"room": "blue"})
    await carol.settle()
    assert carol.events["message"] == []


async def test_admin_is_told_no_such_room(connect: Connect, admin_api: Api, people: dict[str, str]) -> None:
    """Admins may join every room, and learn when a room does not exist."""
    admin = await connect(admin_api.token)
    assert (await admin.call("join", {"room": "blue"}))["role"] == "write"
    assert (await admin.call("join", {"room": "nowhere"}))["error"] == "no_such_room"


async def test_bad_payloads_get_error_acks(connect: Connect, people: dict[str, str]) -> None:
    """Malformed events get bad_request; the connection carries on."""
    alice = await connect(people["alice"])
    for event, payload in [("join", "red"), ("join", {}), ("join", {"room": "a b"}),
                           ("join", {"room": "red", "since_id": "x"}), ("message", None),
                           ("leave", {"room": 5}), ("refresh", {})]:
        ack = await alice.call(event, payload)
        assert ack["ok"] is False and ack["error"] == "bad_request", (event, payload, ack)
    await alice.call("join", {"room": "red"})
    ack = await alice.call("message", {"room": "red", "msg": ""})
    assert ack["error"] == "bad_request"
    ack = await alice.call("message", {"room": "red", "msg": "still here", "client_id": 7})
    assert ack["error"] == "bad_request"
    assert (await alice.call("leave", {"room": "blue"}))["error"] == "not_in_room"
    assert (await alice.call("message", {"room": "red", "msg": "still here"}))["ok"] is True


async def test_revoke_kicks_at_once(connect: Connect, admin_api: Api, people: dict[str, str]) -> None:
    """Revoking bob while he is in red kicks him, and he gets nothing sent after that."""
    alice, bob = await connect(people["alice"]), await connect(people["bob"])
    await alice.call("join", {"room": "red"})
    await bob.call("join", {"room": "red"})
    await admin_api.revoke("red", "bob")
    [kicked] = await bob.wait_for("kicked")
    assert kicked == {"room": "red", "reason": "revoked"}
    [_, left] = await alice.wait_for("presence", 2)
    assert left == {"room": "red", "user": "bob", "action": "left"}
    await alice.call("message", {"room": "red", "msg": "after the kick"})
    await alice.wait_for("message")
    await bob.settle()
    assert bob.events["message"] == []
    assert (await bob.call("message", {"room": "red", "msg": "x"}))["error"] == "not_in_room"
    assert (await bob.call("join", {"room": "red"}))["error"] == "forbidden"


async def test_role_change_to_read_stops_posting(connect: Connect, admin_api: Api, people: dict[str, str]) -> None:
    """Changing bob's role to read stops his posts at once; he still receives."""
    alice, bob = await connect(people["alice"]), await connect(people["bob"])
    await alice.call("join", {"room": "red"})
    await bob.call("join", {"room": "red"})
    await admin_api.grant("red", "bob", "read")
    assert (await bob.call("message", {"room": "red", "msg": "x"}))["error"] == "forbidden"
    await alice.call("message", {"room": "red", "msg": "you can read this"})
    [message] = await bob.wait_for("message")
    assert message["msg"] == "you can read this"


async def test_room_deleted_kicks_everyone(connect: Connect, admin_api: Api, people: dict[str, str]) -> None:
    """Deleting a room kicks each socket in it with reason room_deleted."""
    alice, bob = await connect(people["alice"]), await connect(people["bob"])
    await alice.call("join", {"room": "red"})
    await bob.call("join", {"room": "red"})
    assert (await admin_api.delete("/api/admin/rooms/red")).status_code == 204
    for chatter in (alice, bob):
        [kicked] = await chatter.wait_for("kicked")
        assert kicked == {"room": "red", "reason": "room_deleted"}
    assert (await alice.call("message", {"room": "red", "msg": "x"}))["error"] == "not_in_room"


async def test_disabling_a_user_disconnects_them(connect: Connect, admin_api: Api, people: dict[str, str]) -> None:
    """Disabling bob drops his socket at once and refuses his token afterwards."""
    bob = await connect(people["bob"])
    await bob.wait_for("welcome")
    reply = await admin_api.patch("/api/admin/users/bob", json={"disabled": True})
    assert reply.status_code == 200
    await bob.wait_disconnected()
    assert await refusal(bob.url, people["bob"]) == "unauthorized"


async def test_deleting_a_user_disconnects_them(connect: Connect, admin_api: Api, people: dict[str, str]) -> None:
    """Deleting alice drops her socket; her messages stay in history."""
    alice = await connect(people["alice"])
    await alice.call("join", {"room": "red"})
    await alice.call("message", {"room": "red", "msg": "remember me"})
    assert (await admin_api.delete("/api/admin/users/alice")).status_code == 204
    await alice.wait_disconnected()
    history = (await admin_api.get("/api/rooms/red/messages")).json()["messages"]
    assert [(m["user"], m["msg"]) for m in history] == [("alice", "remember me")]


@both_backends
async def test_reconnect_with_since_id_gets_exactly_the_missed(connect: Connect, people: dict[str, str]) -> None:
    """bob drops, alice posts three messages, bob rejoins with since_id and gets exactly those."""
    alice, bob = await connect(people["alice"]), await connect(people["bob"])
    await alice.call("join", {"room": "red"})
    await bob.call("join", {"room": "red"})
    for text in ("one", "two"):
        await alice.call("message", {"room": "red", "msg": text})
    seen = await bob.wait_for("message", 2)
    last = seen[-1]["id"]
    await bob.close()
    for text in ("three", "four", "five"):
        await alice.call("message", {"room": "red", "msg": text})
    bob2 = await connect(people["bob"])
    joined = await bob2.call("join", {"room": "red", "since_id": last})
    assert [(m["id"], m["msg"]) for m in joined["history"]] == [(3, "three"), (4, "four"), (5, "five")]
    plain = await bob2.call("join", {"room": "red"})
    assert [m["msg"] for m in plain["history"]] == ["one", "two", "three", "four", "five"]


@both_backends
async def test_concurrent_senders_get_gapless_ordered_ids(
    connect: Connect, admin_api: Api, server: Server
) -> None:
    """20 senders posting at once into one room: ids 1..N with no gap, same order at every member."""
    await admin_api.create_room("busy", public=True)
    senders = []
    for i in range(20):
        await admin_api.create_user(f"s{i}")
        chatter = await connect(await admin_api.token_for(f"s{i}"))
        await chatter.call("join", {"room": "busy"})
        senders.append(chatter)
    per_sender = 5

    async def send_all(chatter: Chatter, i: int) -> list[int]:
        ids = []
        for n in range(per_sender):
            ack = await chatter.call("message", {"room": "busy", "msg": f"{i}-{n}"})
            assert ack["ok"], ack
            ids.append(ack["id"])
        return ids

    acked = await asyncio.gather(*(send_all(c, i) for i, c in enumerate(senders)))
    total = 20 * per_sender
    assert sorted(i for ids in acked for i in ids) == list(range(1, total + 1))
    for ids in acked:
        assert ids == sorted(ids)  # each sender's own messages in its order
    orders = []
    for chatter in senders:
        got = await chatter.wait_for("message", total)
        orders.append([m["id"] for m in got])
    assert all(order == list(range(1, total + 1)) for order in orders)
    stored = (await admin_api.get("/api/rooms/busy/messages", params={"limit": 200})).json()["messages"]
    assert [m["id"] for m in stored] == list(range(1, total + 1))


async def test_client_id_retry_stores_nothing_new(connect: Connect, admin_api: Api, people: dict[str, str]) -> None:
    """A retry with the same client_id answers the first id and sends nothing again."""
    alice, bob = await connect(people["alice"]), await connect(people["bob"])
    await alice.call("join", {"room": "red"})
    await bob.call("join", {"room": "red"})
    first = await alice.call("message", {"room": "red", "msg": "once", "client_id": "c-1"})
    again, concurrent = await asyncio.gather(
        alice.call("message", {"room": "red", "msg": "once", "client_id": "c-1"}),
        alice.call("message", {"room": "red", "msg": "once", "client_id": "c-1"}),
    )
    assert first["ok"] and again["id"] == first["id"] == concurrent["id"]
    await bob.wait_for("message")
    await bob.settle()
    assert len(bob.events["message"]) == 1
    history = (await admin_api.get("/api/rooms/red/messages")).json()["messages"]
    assert [m["msg"] for m in history] == ["once"]


async def test_too_long_message(connect: Connect, people: dict[str, str]) -> None:
    """A message over max_message_chars gets too_large; the connection carries on."""
    alice = await connect(people["alice"])
    await alice.call("join", {"room": "red"})
    ack = await alice.call("message", {"room": "red", "msg": "x" * 2001})
    assert ack["ok"] is False and ack["error"] == "too_large"
    ack = await alice.call("message", {"room": "red", "msg": "x" * 2000})
    assert ack["ok"] is True


async def test_rate_limit(connect: Connect, people: dict[str, str]) -> None:
    """Past messages_per_10s a user's posts get rate_limited; other users carry on."""
    alice, bob = await connect(people["alice"]), await connect(people["bob"])
    await alice.call("join", {"room": "red"})
    await bob.call("join", {"room": "red"})
    acks = [await alice.call("message", {"room": "red", "msg": f"m{i}"}) for i in range(22)]
    assert all(a["ok"] for a in acks[:20])
    assert acks[20]["ok"] is False and acks[20]["error"] == "rate_limited"
    assert (await bob.call("message", {"room": "red", "msg": "I am fine"}))["ok"] is True


async def test_one_presence_per_user_not_per_tab(connect: Connect, people: dict[str, str]) -> None:
    """Two tabs of bob are one member: one `joined`, and `left` only when the last tab leaves."""
    alice = await connect(people["alice"])
    await alice.call("join", {"room": "red"})
    tab1, tab2 = await connect(people["bob"]), await connect(people["bob"])
    await tab1.call("join", {"room": "red"})
    joined = await tab2.call("join", {"room": "red"})
    assert joined["members"] == ["alice", "bob"]
    await tab1.close()
    await alice.settle()
    assert [p["action"] for p in alice.events["presence"]] == ["joined"]
    await tab2.close()
    await alice.wait_for("presence", 2)
    assert [p["action"] for p in alice.events["presence"]] == ["joined", "left"]


async def test_refresh_on_a_live_socket(connect: Connect, admin_api: Api, people: dict[str, str]) -> None:
    """`refresh` takes a new token of the same user, and refuses someone else's."""
    alice = await connect(people["alice"])
    ack = await alice.call("refresh", {"token": await admin_api.token_for("alice")})
    assert ack["ok"] is True and 0 < ack["expires_in"] <= 300
    ack = await alice.call("refresh", {"token": people["bob"]})
    assert ack == {"ok": False, "error": "unauthorized", "message": "The token belongs to another user."}
    assert (await alice.call("refresh", {"token": "junk"}))["error"] == "unauthorized"


async def test_history_page_over_http(admin_api: Api, api: Api, connect: Connect, people: dict[str, str]) -> None:
    """GET messages pages backwards with before_id; non-members get 403 for unknown and private rooms alike."""
    alice = await connect(people["alice"])
    await alice.call("join", {"room": "red"})
    for i in range(5):
        await alice.call("message", {"room": "red", "msg": f"m{i}"})
    await api.login("alice", "password-123")
    page = (await api.get("/api/rooms/red/messages", params={"limit": 2})).json()["messages"]
    assert [m["id"] for m in page] == [4, 5]
    page = (await api.get("/api/rooms/red/messages", params={"before_id": 4, "limit": 2})).json()["messages"]
    assert [m["id"] for m in page] == [2, 3]
    assert set(page[0]) == {"id", "room", "user", "msg", "ts"}
    for room in ("blue", "nowhere"):
        reply = await api.get(f"/api/rooms/{room}/messages")
        assert (reply.status_code, reply.json()["error"]["code"]) == (403, "forbidden")
    assert (await admin_api.get("/api/rooms/nowhere/messages")).status_code == 404
    assert (await api.get("/api/rooms/red/messages", params={"limit": 0})).status_code == 400


async def test_too_many_sockets(connect: Connect, server: Server, people: dict[str, str]) -> None:
    """Past max_sockets_per_user a connection is refused with too_many_sockets."""
    limit = server.services.settings.max_sockets_per_user
    for _ in range(limit):
        await connect(people["carol"])
    assert await refusal(server.url, people["carol"]) == "too_many_sockets"


async def test_foreign_origins_are_refused(connect: Connect, server: Server, people: dict[str, str]) -> None:
    """A browser page from another origin cannot connect; the server's own origin can."""
    assert await refusal(server.url, people["alice"], headers={"Origin": "http://evil.example"}) is not None
    own = await connect(people["alice"], headers={"Origin": server.url})
    [welcome] = await own.wait_for("welcome")
    assert welcome["user"] == "alice"


async def test_making_a_room_private_kicks_those_without_a_grant(
    connect: Connect, admin_api: Api, people: dict[str, str]
) -> None:
    """A public room turned private keeps grantees and admins, and kicks everyone else at once."""
    await admin_api.create_room("town", public=True)
    await admin_api.grant("town", "alice", "read")
    alice, bob, admin = await connect(people["alice"]), await connect(people["bob"]), await connect(admin_api.token)
    for chatter in (alice, bob, admin):
        assert (await chatter.call("join", {"room": "town"}))["ok"]
    reply = await admin_api.patch("/api/admin/rooms/town", json={"public": False, "title": "Town hall"})
    assert reply.json() == {"name": "town", "title": "Town hall", "public": False}
    [kicked] = await bob.wait_for("kicked")
    assert kicked == {"room": "town", "reason": "revoked"}
    await admin.call("message", {"room": "town", "msg": "private now"})
    [seen] = await alice.wait_for("message")
    assert seen["msg"] == "private now"
    assert alice.events["kicked"] == [] and admin.events["kicked"] == []
    assert (await bob.call("join", {"room": "town"}))["error"] == "forbidden"
    assert (await alice.call("message", {"room": "town", "msg": "x"}))["error"] == "forbidden"
    entries = (await admin_api.get("/api/admin/audit", params={"limit": 1})).json()["entries"]
    assert (entries[0]["action"], entries[0]["target"]) == ("room.update", "room:town title,public=false")
    assert (await admin_api.patch("/api/admin/rooms/town", json={})).status_code == 400
    assert (await admin_api.patch("/api/admin/rooms/nowhere", json={"public": True})).status_code == 404


async def test_join_history_stays_right_as_the_room_changes(connect: Connect, admin_api: Api) -> None:
    """Joins see the latest 50, since_id sees everything missed, and a re-created room starts empty."""
    await admin_api.create_room("hall", public=True)
    senders = []
    for name in ("p1", "p2", "p3"):
        await admin_api.create_user(name)
        chatter = await connect(await admin_api.token_for(name))
        assert (await chatter.call("join", {"room": "hall"}))["history"] == []
        senders.append(chatter)
    for n in range(60):
        ack = await senders[n % 3].call("message", {"room": "hall", "msg": f"m{n + 1}"})
        assert ack.get("id") == n + 1, ack
    reader = await connect(admin_api.token)
    latest = (await reader.call("join", {"room": "hall"}))["history"]
    assert [m["id"] for m in latest] == list(range(11, 61))
    assert latest[-1]["msg"] == "m60"
    missed = (await reader.call("join", {"room": "hall", "since_id": 5}))["history"]
    assert [m["id"] for m in missed] == list(range(6, 61))
    recent = (await reader.call("join", {"room": "hall", "since_id": 58}))["history"]
    assert [m["msg"] for m in recent] == ["m59", "m60"]

    assert (await admin_api.delete("/api/admin/rooms/hall")).status_code == 204
    await admin_api.create_room("hall", public=True)
    assert (await reader.call("join", {"room": "hall"}))["history"] == []
    assert (await reader.call("message", {"room": "hall", "msg": "fresh"}))["id"] == 1
    ack = await senders[0].call("join", {"room": "hall"})
    assert [m["msg"] for m in ack["history"]] == ["fresh"]


async def test_demoted_admin_leaves_private_rooms_without_a_grant(
    connect: Connect, admin_api: Api, people: dict[str, str]
) -> None:
    """An admin in a private room they have no grant for is kicked the moment they are demoted."""
    await admin_api.create_user("eve", is_admin=True)
    await admin_api.create_room("open", public=True)
    eve = await connect(await admin_api.token_for("eve"))
    for room in ("red", "open"):
        assert (await eve.call("join", {"room": room}))["role"] == "write"
    reply = await admin_api.patch("/api/admin/users/eve", json={"is_admin": False})
    assert reply.json()["is_admin"] is False
    [kicked] = await eve.wait_for("kicked")
    assert kicked == {"room": "red", "reason": "revoked"}
    alice = await connect(people["alice"])
    await alice.call("join", {"room": "red"})
    await alice.call("message", {"room": "red", "msg": "grantees only"})
    await alice.call("join", {"room": "open"})
    await alice.call("message", {"room": "open", "msg": "everyone"})
    [seen] = await eve.wait_for("message")
    assert seen["msg"] == "everyone"
    await eve.settle()
    assert [m["msg"] for m in eve.events["message"]] == ["everyone"]
    assert (await eve.call("join", {"room": "red"}))["error"] == "forbidden"


async def test_a_long_message_of_emoji_is_acked_not_dropped(connect: Connect, people: dict[str, str]) -> None:
    """2,000 emoji (12 bytes each once escaped) are accepted; 2,001 get too_large on a live connection."""
    alice = await connect(people["alice"])
    await alice.call("join", {"room": "red"})
    assert (await alice.call("message", {"room": "red", "msg": "\U0001F600" * 2000}))["ok"] is True
    assert (await alice.call("message", {"room": "red", "msg": "\U0001F600" * 2001}))["error"] == "too_large"
    assert alice.sio.connected


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_joins_racing_busy_senders_miss_nothing_and_get_nothing_twice(
    connect: Connect, admin_api: Api, backend: str
) -> None:
    """Sockets joining (some with an old since_id) while others post: history + live = every message once."""
    await admin_api.create_room("busy", public=True)
    senders = []
    for i in range(6):  # 20 messages each: the default rate limit
        await admin_api.create_user(f"w{i}")
        chatter = await connect(await admin_api.token_for(f"w{i}"))
        await chatter.call("join", {"room": "busy"})
        senders.append(chatter)
    reader_token = str(admin_api.token)
    for n in range(60):  # more than the 50 a join keeps in memory
        await senders[n % 6].call("message", {"room": "busy", "msg": f"before {n}"})

    async def post(chatter: Chatter, i: int) -> None:
        for n in range(10):
            assert (await chatter.call("message", {"room": "busy", "msg": f"{i}-{n}"}))["ok"]

    async def join_late(k: int) -> tuple[int, list[int]]:
        await asyncio.sleep(0.01 * k)
        reader = await connect(reader_token)
        since = [None, 3, 40, 58][k % 4]
        ack = await reader.call("join", {"room": "busy", "since_id": since} if since is not None else {"room": "busy"})
        await asyncio.sleep(0.6)  # let the posting end and the live messages arrive
        ids = [m["id"] for m in ack["history"]] + [m["id"] for m in reader.events["message"]]
        start = ids[0] if since is None and ids else (since or 0) + 1
        return start, ids

    results = await asyncio.gather(*(post(c, i) for i, c in enumerate(senders)), *(join_late(k) for k in range(8)))
    total = 60 + 6 * 10
    for start, ids in results[6:]:
        assert ids == list(range(start, total + 1)), (start, ids)
