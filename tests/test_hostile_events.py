"""Issue 8: what a hostile client can send over Socket.IO, and the order one socket's events take effect.

Raw Engine.IO/Socket.IO frames over a websocket (aiohttp), so that the
client sends exactly what a well-behaved library never would: lifecycle
event names (`42["disconnect"]`), internal method names, non-object
payloads, extra arguments. Only join, leave, message and refresh may reach
a handler; anything else is answered `bad_request` and changes nothing, and
the socket still obeys every rule (disabling, token expiry, the socket cap).

Also contract 1.1 "Per-connection order" (issue 8.11) and flooding (8.12).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from quart_rooms.storage import queries
from quart_rooms.storage.queries import NewMessage
from tests.conftest import add_admin, make_settings, running
from tests.helpers import Api, Chatter, Server, chatters, cheap_passwords, refusal
from tests.test_redis import redis_url

__all__ = ["chatters", "cheap_passwords", "redis_url"]  # fixtures
Connect = Callable[..., Awaitable[Chatter]]
pytestmark = pytest.mark.usefixtures("cheap_passwords")


class RawSocket:
    """A Socket.IO client made of websocket frames: sends exactly the text it is given."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.events: dict[str, list[Any]] = defaultdict(list)
        self.acks: dict[int, asyncio.Future[list[Any]]] = {}
        self.frames: list[str] = []
        self.closed = asyncio.Event()  # the websocket closed, or the server sent a Socket.IO DISCONNECT
        self._arrived = asyncio.Event()
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None

    async def open(self, token: str) -> str:
        """Engine.IO open, then CONNECT with the token; the reply frame (`40{...}` or `44{...}`)."""
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(self.url)
        opening = await self.ws.receive_str(timeout=5)
        assert opening.startswith("0{"), opening
        await self.ws.send_str("40" + json.dumps({"token": token}))
        reply = await self.ws.receive_str(timeout=5)
        self._reader = asyncio.create_task(self._read())
        return reply

    async def _read(self) -> None:
        assert self.ws is not None
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            text = str(frame.data)
            self.frames.append(text)
            if text == "2":
                await self.ws.send_str("3")
            elif text.startswith("42"):
                name, *data = json.loads(text[2:])
                self.events[name].append(data[0] if data else None)
            elif text.startswith("43"):
                digits = "".join(itertools.takewhile(str.isdigit, text[2:]))
                future = self.acks.get(int(digits))
                if future is not None and not future.done():
                    future.set_result(json.loads(text[2 + len(digits):]))
            elif text.startswith("41"):
                self.closed.set()
            self._arrived.set()
        self.closed.set()
        self._arrived.set()

    async def send(self, frame: str) -> None:
        """Send one frame as it is."""
        assert self.ws is not None
        await self.ws.send_str(frame)

    async def call(self, body: str, timeout: float = 5) -> Any:
        """Send `42<id><body>` and return the ack's first argument (`body` is the JSON array text)."""
        ack_id = next(self._ids)
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.acks[ack_id] = future
        await self.send(f"42{ack_id}{body}")
        args = await asyncio.wait_for(future, timeout)
        return args[0] if args else None

    async def wait_for(self, event: str, count: int = 1, timeout: float = 3) -> list[Any]:
        """Wait until `count` events of this name arrived."""
        async def arrived() -> None:
            while len(self.events[event]) < count:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(arrived(), timeout)
        return self.events[event]

    async def wait_closed(self, timeout: float = 3) -> None:
        """Wait until the server ended the connection; fails the test if it does not."""
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except TimeoutError:
            raise AssertionError("the server did not close the raw socket") from None

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.http is not None:
            await self.http.close()


@pytest.fixture
async def raw(server: Server) -> Any:
    """`await raw(token)`: a connected RawSocket (asserts the CONNECT worked), closed after the test."""
    opened: list[RawSocket] = []

    async def _open(token: str) -> RawSocket:
        sock = RawSocket(server.url)
        opened.append(sock)
        reply = await sock.open(token)
        assert reply.startswith("40{") and '"sid"' in reply, reply
        await sock.wait_for("welcome")
        return sock

    yield _open
    for sock in opened:
        await sock.close()


@pytest.fixture
async def people(admin_api: Api) -> dict[str, str]:
    """alice and bob with write in the private room 'red', carol in none: their access tokens."""
    for name in ("alice", "bob", "carol"):
        await admin_api.create_user(name)
    await admin_api.create_room("red")
    await admin_api.grant("red", "alice")
    await admin_api.grant("red", "bob")
    return {name: await admin_api.token_for(name) for name in ("alice", "bob", "carol")}


BAD_REQUEST = {"ok": False, "error": "bad_request"}


def refused(ack: Any) -> bool:
    return isinstance(ack, dict) and {k: ack.get(k) for k in BAD_REQUEST} == BAD_REQUEST


# --- 8.1: only the contract's events reach handlers -------------------------------------------


async def test_lifecycle_and_internal_names_reach_no_handler(
    raw: Any, chatters: Connect, admin_api: Api, people: dict[str, str]
) -> None:
    """`disconnect`, `connect`, internal method names and unknown events get bad_request and change
    nothing: alice stays in red (bob sees no `left`, she still gets and posts messages), and the
    socket is still disconnected when her account is disabled."""
    bob = await chatters(people["bob"])
    assert (await bob.call("join", {"room": "red"}))["ok"]
    alice = await raw(people["alice"])
    assert (await alice.call('["join",{"room":"red"}]'))["ok"] is True
    await bob.wait_for("presence")

    # Without an ack id first: nothing comes back, nothing changes.
    await alice.send('42["disconnect"]')
    await alice.send('42["disconnect","client namespace disconnect"]')
    carol = people["carol"]
    await alice.send(f'42["connect",{{"token":"{carol}"}}]')
    hostile = [
        '["disconnect"]',
        '["disconnect","transport close"]',
        f'["connect",{{"token":"{carol}"}}]',
        f'["connect",{{"HTTP_AUTHORIZATION":"Bearer {carol}"}},{{"token":"{carol}"}}]',
        '["get_session"]',
        '["save_session",{"user":"carol"}]',
        '["trigger_event","disconnect"]',
        '["trigger_event","join",{"room":"red"}]',
        '["emit","message",{"room":"red","msg":"spoofed"}]',
        '["send",{"room":"red","msg":"spoofed"}]',
        '["enter_room","red"]',
        '["on_connect"]',
        '["on_disconnect"]',
        '["_join",{"room":"red"}]',
        '["_message",{"room":"red","msg":"spoofed"}]',
        '["__init__"]',
        '["JOIN",{"room":"red"}]',
        '["Message",{"room":"red","msg":"spoofed"}]',
        '["welcome",{"user":"carol"}]',
        '["kicked",{"room":"red","reason":"revoked"}]',
        '["no such event",{}]',
        '[7]',
        '[null]',
        '[true,{"room":"red"}]',
    ]
    for body in hostile:
        ack = await alice.call(body)
        assert refused(ack), (body, ack)

    # Non-object payloads of the contract's events.
    for body in ['["join","red"]', '["join",["red"]]', '["join",null]', '["join"]', '["join",7]',
                 '["message","spoofed"]', '["message",[{"room":"red","msg":"spoofed"}]]',
                 '["leave",true]', json.dumps(["refresh", people["alice"]])]:
        ack = await alice.call(body)
        assert refused(ack), (body, ack)

    # Still the same live socket, still in red.
    assert not alice.closed.is_set()
    await bob.settle()
    assert [p["action"] for p in bob.events["presence"]] == ["joined"]
    assert bob.events["message"] == []
    assert (await bob.call("message", {"room": "red", "msg": "still there?"}))["ok"]
    [seen] = await alice.wait_for("message")
    assert (seen["user"], seen["msg"]) == ("bob", "still there?")
    posted = await alice.call('["message",{"room":"red","msg":"yes"}]')
    assert posted["ok"] is True and posted["id"] == 2
    got = await bob.wait_for("message", 2)
    assert [(m["user"], m["msg"]) for m in got] == [("bob", "still there?"), ("alice", "yes")]  # not carol
    assert [w["user"] for w in alice.events["welcome"]] == ["alice"]  # one connect, as alice
    assert "kicked" not in alice.events and "session_expired" not in alice.events

    # The rules still hold for it: disabling alice ends this socket at once.
    assert (await admin_api.patch("/api/admin/users/alice", json={"disabled": True})).status_code == 200
    [expired] = await alice.wait_for("session_expired")
    assert expired == {"reason": "account_changed"}
    await alice.wait_closed()
    [_, left] = await bob.wait_for("presence", 2)
    assert left == {"room": "red", "user": "alice", "action": "left"}


async def test_event_names_that_are_not_strings_still_get_an_ack(raw: Any, people: dict[str, str]) -> None:
    """An event whose name is an object or a list, with an ack id, is answered bad_request like any
    unknown event (no ack at all leaves a client's callback hanging), and the socket carries on."""
    alice = await raw(people["alice"])
    for body in ['[{"name":"join"},{"room":"red"}]', '[["join"],{"room":"red"}]']:
        try:
            ack = await alice.call(body, timeout=0.5)
        except TimeoutError:
            ack = "no ack within 0.5 s"
        assert refused(ack), (body, ack)
    assert (await alice.call('["join",{"room":"red"}]'))["ok"] is True


async def test_extra_arguments_are_refused_and_post_nothing(
    raw: Any, chatters: Connect, people: dict[str, str]
) -> None:
    """Each contract event takes one payload: `["message", {...}, "extra"]` is bad_request, and nothing
    is stored or sent."""
    bob = await chatters(people["bob"])
    await bob.call("join", {"room": "red"})
    alice = await raw(people["alice"])
    assert (await alice.call('["join",{"room":"red"}]'))["ok"]
    for body in ['["message",{"room":"red","msg":"twice?"},"extra"]',
                 '["message",{"room":"red","msg":"twice?"},{"room":"red","msg":"again"}]',
                 '["leave",{"room":"red"},null]']:
        ack = await alice.call(body)
        assert refused(ack), (body, ack)
    await bob.settle()
    assert bob.events["message"] == []
    assert [p["action"] for p in bob.events["presence"]] == ["joined"]  # the extra-arg leave did not leave
    assert (await alice.call('["message",{"room":"red","msg":"plain"}]'))["id"] == 1


async def test_garbage_frames_leave_the_socket_as_it_was(
    raw: Any, chatters: Connect, people: dict[str, str]
) -> None:
    """Frames that are not valid events (empty arrays, bad JSON, a bare type) change nothing:
    the socket is still in its room, and nobody else notices."""
    bob = await chatters(people["bob"])
    await bob.call("join", {"room": "red"})
    alice = await raw(people["alice"])
    assert (await alice.call('["join",{"room":"red"}]'))["ok"]
    await bob.wait_for("presence")
    for frame in ["42[]", "4299[]", "42", "4", "42[", '42{"room":"red"}', '42"join"', "43[]", "4399[1]",
                  '44{"message":"x"}', '40{"token":"nope"}']:
        await alice.send(frame)
    ack = await alice.call('["message",{"room":"red","msg":"after the garbage"}]')
    assert ack["ok"] is True and ack["id"] == 1
    [seen] = await bob.wait_for("message")
    assert seen["msg"] == "after the garbage"
    await bob.settle()
    assert [p["action"] for p in bob.events["presence"]] == ["joined"]
    assert not alice.closed.is_set()


async def test_disconnect_frames_free_no_socket_slot(raw: Any, server: Server, people: dict[str, str]) -> None:
    """Ten sockets of carol each send `42["disconnect"]` (and an acked one): the 11th is still refused
    with too_many_sockets; closing one for real frees a slot."""
    limit = server.services.settings.max_sockets_per_user
    assert limit == 10
    sockets = [await raw(people["carol"]) for _ in range(limit)]
    for sock in sockets:
        await sock.send('42["disconnect"]')
        assert refused(await sock.call('["disconnect"]'))
    assert await refusal(server.url, people["carol"]) == "too_many_sockets"
    for sock in sockets:  # every one still answers
        assert (await sock.call('["leave",{"room":"red"}]'))["error"] == "not_in_room"
    await sockets[0].close()
    replacement = RawSocket(server.url)
    try:
        for _ in range(50):  # the server notices the close within a moment
            reply = await replacement.open(people["carol"])
            if reply.startswith("40{"):
                break
            await replacement.close()
            replacement = RawSocket(server.url)
            await asyncio.sleep(0.02)
        assert reply.startswith("40{"), reply
    finally:
        await replacement.close()


async def test_twenty_concurrent_connects_of_one_user_get_ten_sockets(server: Server, people: dict[str, str]) -> None:
    """20 sockets of carol connecting at the same moment: exactly max_sockets_per_user (10) get in,
    the others are refused with too_many_sockets."""
    sockets = [RawSocket(server.url) for _ in range(20)]
    try:
        replies = await asyncio.gather(*(sock.open(people["carol"]) for sock in sockets))
        accepted = [r for r in replies if r.startswith("40{")]
        refused_ = [r for r in replies if r.startswith("44")]
        assert len(accepted) == 10 and len(refused_) == 10, replies
        assert all('"too_many_sockets"' in r for r in refused_), refused_
    finally:
        for sock in sockets:
            await sock.close()


async def test_a_raw_socket_does_not_outlive_its_token(tmp_path: Path) -> None:
    """With 1-second access tokens, a socket that sent `42["disconnect"]` still gets
    `session_expired {reason: token_expired}` and is closed when its token runs out."""
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 't.db'}", tmp_path / "i", access_token_ttl=1)
    async with running(settings) as server, Api(server) as admin:
        await add_admin(server)
        await admin.login("admin", server.admin_password)
        sock = RawSocket(server.url)
        try:
            assert (await sock.open(admin.token or "")).startswith("40{")
            await sock.send('42["disconnect"]')
            assert refused(await sock.call('["disconnect"]'))
            [expired] = await sock.wait_for("session_expired", timeout=4)
            assert expired == {"reason": "token_expired"}
            await sock.wait_closed()
        finally:
            await sock.close()


# --- 8.11: per-connection order ---------------------------------------------------------------


async def emit_all(chatter: Chatter, events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Emit every event back to back without waiting for any ack; the acks, in send order."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in events]
    for (event, data), future in zip(events, futures, strict=True):
        await chatter.sio.emit(event, data, callback=lambda *args, f=future: f.done() or f.set_result(args[0]))
    for _ in range(1000):  # up to 20 s, failing at once if the server drops the socket
        if all(f.done() for f in futures):
            return [f.result() for f in futures]
        if not chatter.sio.connected:
            got = [f.result() for f in futures if f.done()]
            raise AssertionError(f"the server disconnected the socket after {len(got)} of {len(events)} acks; "
                                 f"the last: {got[-1:]}")
        await asyncio.sleep(0.02)
    raise AssertionError("acks missing after 20 s")


@pytest.mark.parametrize("settings_overrides", [{"messages_per_10s": 1000}])
async def test_join_then_message_back_to_back(chatters: Connect, admin_api: Api, people: dict[str, str]) -> None:
    """`join` then `message` without waiting for the join's ack: the message is accepted, every time,
    on fresh sockets and on one socket that joins and leaves 30 times."""
    fresh = []
    for n in range(10):
        chatter = Chatter(admin_api.server.url)
        fresh.append(chatter)
        await chatter.connect(people["alice"] if n % 2 else people["bob"])
    try:
        results = await asyncio.gather(*(
            emit_all(c, [("join", {"room": "red"}), ("message", {"room": "red", "msg": f"fresh {n}"})])
            for n, c in enumerate(fresh)))
    finally:
        for chatter in fresh:
            await chatter.close()
    for joined, posted in results:
        assert joined["ok"] is True, joined
        assert posted["ok"] is True, posted

    alice = await chatters(people["alice"])
    rounds: list[tuple[str, dict[str, Any]]] = []
    for n in range(30):
        rounds += [("join", {"room": "red"}), ("message", {"room": "red", "msg": f"round {n}"}),
                   ("leave", {"room": "red"})]
    acks = await emit_all(alice, rounds)
    assert [a.get("error") for a in acks if not a["ok"]] == []
    ids = [a["id"] for a in acks[1::3]]
    assert ids == list(range(11, 41))
    # The other way round too: a message sent right after a leave is no longer in the room.
    acks = await emit_all(alice, [("join", {"room": "red"}), ("leave", {"room": "red"}),
                                  ("message", {"room": "red", "msg": "too late"})])
    assert [a["ok"] for a in acks] == [True, True, False] and acks[2]["error"] == "not_in_room"


@pytest.mark.parametrize("settings_overrides", [{"messages_per_10s": 1000}])
async def test_200_back_to_back_frames_are_all_acked_in_order(
    raw: Any, admin_api: Api, people: dict[str, str]
) -> None:
    """200 `message` frames written back to back before any ack (right after some unrelated admin
    change, as happens on a busy server): every one is acked ok, ids in send order, and the socket
    stays connected. Three rounds."""
    alice = await raw(people["alice"])
    assert (await alice.call('["join",{"room":"red"}]'))["ok"]
    loop = asyncio.get_running_loop()
    for round_ in range(3):
        await admin_api.create_room(f"elsewhere{round_}")  # any admin change anywhere
        futures = []
        for n in range(200):
            future: asyncio.Future[list[Any]] = loop.create_future()
            alice.acks[1000 * (round_ + 1) + n] = future
            futures.append(future)
            await alice.send(f'42{1000 * (round_ + 1) + n}["message",{{"room":"red","msg":"m{n}"}}]')
        for _ in range(500):  # up to 10 s, or until the server drops the socket
            if all(f.done() for f in futures) or alice.closed.is_set():
                break
            await asyncio.sleep(0.02)
        acks = [f.result()[0] for f in futures if f.done()]
        assert not alice.closed.is_set(), (f"round {round_}: disconnected after {len(acks)} of 200 acks; "
                                           f"the last: {acks[-1:]}")
        assert [a.get("id") for a in acks] == list(range(200 * round_ + 1, 200 * round_ + 201))


@pytest.mark.parametrize("settings_overrides", [{"messages_per_10s": 1000}])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_one_sockets_messages_get_ids_in_send_order(
    chatters: Connect, admin_api: Api, people: dict[str, str], backend: str
) -> None:
    """Two sockets each send 200 messages back to back, at the same time: each socket's acks carry
    increasing ids in send order, the ids are gapless, and a member receives every message in id
    order with each sender's texts in the order sent."""
    alice, bob = await chatters(people["alice"]), await chatters(people["bob"])
    listener = await chatters(admin_api.token)
    for chatter in (alice, bob, listener):
        assert (await chatter.call("join", {"room": "red"}))["ok"]
    count = 200
    acked = await asyncio.gather(*(
        emit_all(chatter, [("message", {"room": "red", "msg": f"{name} {n}"}) for n in range(count)])
        for name, chatter in (("alice", alice), ("bob", bob))))
    for acks in acked:
        assert all(a["ok"] for a in acks), [a for a in acks if not a["ok"]][:3]
        ids = [a["id"] for a in acks]
        assert ids == sorted(ids) and len(set(ids)) == count
    assert sorted(a["id"] for acks in acked for a in acks) == list(range(1, 2 * count + 1))
    got = await listener.wait_for("message", 2 * count, timeout=10)
    assert [m["id"] for m in got] == list(range(1, 2 * count + 1))
    for name in ("alice", "bob"):
        assert [m["msg"] for m in got if m["user"] == name] == [f"{name} {n}" for n in range(count)]


@pytest.mark.parametrize("backend", ["postgres"])  # several nodes share a database server
async def test_send_order_holds_across_two_servers(redis_url: str, database_url: str, tmp_path: Path) -> None:
    """Two servers sharing PostgreSQL and Redis: a socket on each sends 200 messages back to back;
    each socket's ids follow its send order, and members on both servers see 1..400 in order."""
    shared = {"redis_url": redis_url, "redis_channel": f"test-{uuid.uuid4().hex}",
              "jwt_secret": secrets.token_urlsafe(32), "messages_per_10s": 1000}
    async with running(make_settings(database_url, tmp_path / "a", **shared)) as a, \
            running(make_settings(database_url, tmp_path / "b", **shared)) as b:
        await add_admin(a)
        async with Api(a) as admin:
            await admin.login("admin", a.admin_password)
            await admin.create_room("red", public=True)
            token = str(admin.token)
            sockets = [Chatter(a.url), Chatter(b.url), Chatter(a.url), Chatter(b.url)]
            try:
                for chatter in sockets:
                    await chatter.connect(token)
                    assert (await chatter.call("join", {"room": "red"}))["ok"]
                sender_a, sender_b, listen_a, listen_b = sockets
                count = 200
                acked = await asyncio.gather(*(
                    emit_all(s, [("message", {"room": "red", "msg": f"{tag} {n}"}) for n in range(count)])
                    for tag, s in (("a", sender_a), ("b", sender_b))))
                for acks in acked:
                    assert all(x["ok"] for x in acks), [x for x in acks if not x["ok"]][:3]
                    ids = [x["id"] for x in acks]
                    assert ids == sorted(ids), ids
                assert sorted(x["id"] for acks in acked for x in acks) == list(range(1, 2 * count + 1))
                for listener in (listen_a, listen_b):
                    got = await listener.wait_for("message", 2 * count, timeout=10)
                    assert [m["id"] for m in got] == list(range(1, 2 * count + 1))
                    for tag in ("a", "b"):
                        texts = [m["msg"] for m in got if m["msg"].startswith(tag + " ")]
                        assert texts == [f"{tag} {n}" for n in range(count)]
            finally:
                for chatter in sockets:
                    await chatter.close()


# --- 8.12: flooding -------------------------------------------------------------------------


async def test_a_flood_is_rate_limited_then_disconnected(
    chatters: Connect, admin_api: Api, people: dict[str, str]
) -> None:
    """A socket sending 1,000 messages a second gets `rate_limited` acks with a numeric `retry_after`,
    then is disconnected; only the rate limit's 20 messages are stored, and bob carries on."""
    bob = await chatters(people["bob"])
    await bob.call("join", {"room": "red"})
    alice = await chatters(people["alice"])
    await alice.call("join", {"room": "red"})
    acks: list[dict[str, Any]] = []
    sent = 0
    for _ in range(1000):
        if not alice.sio.connected:
            break
        try:
            await alice.sio.emit("message", {"room": "red", "msg": f"flood {sent}"}, callback=lambda a: acks.append(a))
        except socketio.exceptions.SocketIOError:  # the client notices the disconnect mid-emit
            break
        sent += 1
        await asyncio.sleep(0.001)
    await alice.wait_disconnected(timeout=3)
    assert sent < 1000, "the flooding socket was never disconnected"
    accepted = [a for a in acks if a["ok"]]
    limited = [a for a in acks if not a["ok"] and a["error"] == "rate_limited"]
    assert 0 < len(accepted) <= 20 and limited, acks[:25]  # acks in flight at the disconnect may be lost
    for ack in limited:
        retry = ack.get("retry_after")
        assert isinstance(retry, int | float) and not isinstance(retry, bool) and 0 < retry <= 10, ack
    assert (await bob.call("message", {"room": "red", "msg": "I am fine"}))["ok"] is True
    again = await chatters(people["alice"])  # a new socket does not reset the user's window
    assert (await again.call("join", {"room": "red"}))["ok"]
    ack = await again.call("message", {"room": "red", "msg": "me again"})
    assert ack["ok"] is False and ack["error"] == "rate_limited" and ack["retry_after"] > 0
    stored = (await admin_api.get("/api/rooms/red/messages", params={"limit": 200})).json()["messages"]
    assert [m["user"] for m in stored] == ["alice"] * 20 + ["bob"]  # exactly the rate limit's 20
    assert [m["id"] for m in stored] == list(range(1, 22))
    assert {a["id"] for a in accepted} <= set(range(1, 21))


async def test_a_flood_of_recoveries_is_limited_too(server: Server, admin_api: Api, people: dict[str, str]) -> None:
    """A socket repeating `join {since_id: 0}` 200 times a second (each one a full recovery read from
    storage and sent back: ~80 KB for one 40-byte frame) is limited like a message flood: it gets
    `rate_limited` acks with a numeric retry_after well before 150 of them (and may be disconnected)."""
    await admin_api.create_room("big", public=True)
    async with server.services.db.writes() as session, session.begin():  # stored straight, not posted
        room = await queries.get_room(session, "big")
        assert room is not None
        await queries.store_messages(session, [NewMessage(room.id, "big", "bob", "x" * 200, None)] * 300)
    alice = await raw_open(server, people["alice"])
    try:
        sent = 0
        for n in range(150):
            if alice.closed.is_set():
                break
            await alice.send(f'42{n + 1}["join",{{"room":"big","since_id":0}}]')
            sent += 1
            await asyncio.sleep(0.005)
        for _ in range(250):
            acks = [f for f in alice.frames if f.startswith("43")]
            if alice.closed.is_set() or len(acks) >= sent:
                break
            await asyncio.sleep(0.02)
        full = [f for f in acks if '"ok":true' in f[:20]]
        limited = [json.loads(f[f.index("["):])[0] for f in acks if '"rate_limited"' in f[:120]]
        megabytes = sum(len(f) for f in full) / 1e6
        assert limited, (f"{len(full)} full recoveries ({megabytes:.1f} MB) answered to one socket, none "
                         f"rate_limited{' (then disconnected)' if alice.closed.is_set() else ''}")
        for ack in limited:
            assert isinstance(ack.get("retry_after"), int | float) and ack["retry_after"] > 0, ack
    finally:
        await alice.close()


async def raw_open(server: Server, token: str) -> RawSocket:
    sock = RawSocket(server.url)
    reply = await sock.open(token)
    assert reply.startswith("40{"), reply
    return sock
