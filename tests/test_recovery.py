"""Issue 8.8: recovery after a reconnect is bounded and honest (contract 1.1).

A `since_id` join returns at most `max_recovery` messages (announced in
`welcome.limits`), oldest first, with `more: true` when more exist; the rest
are read with `GET /api/rooms/{room}/messages?after_id=` while newer ones
keep arriving live. The join ack carries the room's `epoch`; a `since_id`
from an earlier room of that name answers the latest history with
`reset: true`, and a `since_id` without `epoch` counts as the current epoch.

Large rooms are filled straight through storage (the writer's own query),
before any socket opens them, rather than posted one by one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from quart_rooms.storage import queries
from quart_rooms.storage.queries import NewMessage
from tests.helpers import Api, Chatter, Server, chatters, cheap_passwords

__all__ = ["chatters", "cheap_passwords"]  # fixtures
Connect = Callable[..., Awaitable[Chatter]]
pytestmark = pytest.mark.usefixtures("cheap_passwords")


async def store_straight(server: Server, room: str, count: int, *, user: str = "bob", width: int = 0) -> None:
    """Store `count` messages "m<id>" (padded to `width`) in one transaction, as the writer does."""
    async with server.services.db.writes() as session, session.begin():
        found = await queries.get_room(session, room)
        assert found is not None
        first = found.last_message_id + 1
        batch = [NewMessage(found.id, found.name, user, f"m{n}".ljust(width, "."), None)
                 for n in range(first, first + count)]
        await queries.store_messages(session, batch)


def ids(messages: list[dict[str, Any]]) -> list[int]:
    return [m["id"] for m in messages]


def span(first: int, last: int) -> list[int]:
    return list(range(first, last + 1))


@pytest.mark.parametrize("settings_overrides", [{"max_recovery": 50}])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_recovery_is_capped_honest_and_the_rest_readable(
    server: Server, admin_api: Api, chatters: Connect, backend: str
) -> None:
    """A room of 600 messages and max_recovery 50: `join {since_id}` answers at most 50, oldest first,
    with `more` true exactly when more exist (from storage, from memory, at the boundaries); the
    client then reads the rest with after_id pages while new messages arrive live: every id once."""
    for name in ("alice", "bob"):
        await admin_api.create_user(name)
    await admin_api.create_room("hall", public=True)
    await store_straight(server, "hall", 600)
    alice = await chatters(await admin_api.token_for("alice"))
    [welcome] = await alice.wait_for("welcome")
    assert welcome["limits"]["max_recovery"] == 50

    expected = {  # since_id -> (ids answered, more)
        0: (span(1, 50), True),
        120: (span(121, 170), True),
        549: (span(550, 599), True),
        550: (span(551, 600), False),
        595: (span(596, 600), False),
        600: ([], False),
        10**12: ([], False),
    }
    for since, (want, more) in expected.items():
        ack = await alice.call("join", {"room": "hall", "since_id": since})
        assert ack["ok"] is True, ack
        assert (ids(ack["history"]), ack.get("more")) == (want, more), since
        assert all(m["msg"] == f"m{m['id']}" for m in ack["history"])
        assert "reset" not in ack and isinstance(ack["epoch"], str) and ack["epoch"]
    plain = await alice.call("join", {"room": "hall"})
    assert ids(plain["history"]) == span(551, 600) and plain.get("more") is not True

    # A member comes back after missing everything: recovery, then pages, while bob keeps posting.
    bob = await chatters(await admin_api.token_for("bob"))
    assert (await bob.call("join", {"room": "hall"}))["ok"]
    reader = await chatters(await admin_api.token_for("alice"))
    ack = await reader.call("join", {"room": "hall", "since_id": 0})
    assert ids(ack["history"]) == span(1, 50) and ack["more"] is True
    for n in range(3):
        assert (await bob.call("message", {"room": "hall", "msg": f"live {n}"}))["ok"]
    live = await reader.wait_for("message", 3)
    assert ids(live) == span(601, 603)
    await alice.call("leave", {"room": "hall"})
    page_api = Api(server)
    async with page_api:
        await page_api.login("alice", "password-123")
        seen = ids(ack["history"])
        while seen[-1] < live[0]["id"] - 1:
            reply = await page_api.get("/api/rooms/hall/messages", params={"after_id": seen[-1], "limit": 200})
            assert reply.status_code == 200, reply.text
            page = ids(reply.json()["messages"])
            assert page and page == span(seen[-1] + 1, seen[-1] + len(page)) and len(page) <= 200
            seen += page
        assert sorted(set(seen + ids(live))) == span(1, 603)
        for params in ({"after_id": 0, "limit": 201}, {"after_id": -1}, {"after_id": 5, "before_id": 9}):
            assert (await page_api.get("/api/rooms/hall/messages", params=params)).status_code == 400, params
    await reader.settle()
    assert ids(reader.events["message"]) == span(601, 603)


async def test_a_huge_recovery_is_bounded_by_default(server: Server, admin_api: Api, chatters: Connect) -> None:
    """By default (max_recovery 1000, announced in welcome) `join {since_id: 0}` on a room of 5,000
    long messages answers the oldest 1,000 with more: true: a bounded ack, not the whole room."""
    await admin_api.create_room("big", public=True)
    await store_straight(server, "big", 5000, width=500)
    admin = await chatters(admin_api.token)
    [welcome] = await admin.wait_for("welcome")
    assert welcome["limits"]["max_recovery"] == 1000
    ack = await admin.call("join", {"room": "big", "since_id": 0})
    assert ids(ack["history"]) == span(1, 1000) and ack["more"] is True
    assert len(json.dumps(ack)) < 1000 * 700
    ack = await admin.call("join", {"room": "big", "since_id": 3999})
    assert ids(ack["history"]) == span(4000, 4999) and ack["more"] is True
    ack = await admin.call("join", {"room": "big", "since_id": 4000})
    assert ids(ack["history"]) == span(4001, 5000) and ack["more"] is False


async def test_a_room_made_again_answers_with_reset(server: Server, admin_api: Api, chatters: Connect) -> None:
    """alice knew room hall up to id 8 (epoch E1). While she was away hall was deleted and made again,
    and has 60 new messages. `join {since_id: 5, epoch: E1}` answers the latest history (ids 11-60)
    with reset: true and a new epoch; `since_id: 5` without epoch, or with the new epoch, counts as
    the current room (ids 6-60). The same when it comes back as HALL. (On SQLite the room made again
    even gets the old room's id.)"""
    for name in ("alice", "bob"):
        await admin_api.create_user(name)
    await admin_api.create_room("hall", public=True)
    token = await admin_api.token_for("alice")
    alice = await chatters(token)
    first = await alice.call("join", {"room": "hall"})
    old_epoch = first["epoch"]
    for n in range(8):
        assert (await alice.call("message", {"room": "hall", "msg": f"old {n}"}))["ok"]
    await alice.close()

    assert (await admin_api.delete("/api/admin/rooms/hall")).status_code == 204
    await admin_api.create_room("hall", public=True)
    await store_straight(server, "hall", 60)
    alice = await chatters(token)
    ack = await alice.call("join", {"room": "hall", "since_id": 5, "epoch": old_epoch})
    assert ack["ok"] is True and ack.get("reset") is True, ack
    assert ids(ack["history"]) == span(11, 60)
    assert all(m["msg"].startswith("m") for m in ack["history"])
    new_epoch = ack["epoch"]
    assert isinstance(new_epoch, str) and new_epoch != old_epoch
    for request in ({"room": "hall", "since_id": 5}, {"room": "hall", "since_id": 5, "epoch": new_epoch}):
        ack = await alice.call("join", request)
        assert not ack.get("reset") and ids(ack["history"]) == span(6, 60), request
        assert ack["epoch"] == new_epoch and ack["more"] is False
    ack = await alice.call("join", {"room": "hall", "since_id": 0, "epoch": old_epoch})
    assert ack.get("reset") is True and ids(ack["history"]) == span(11, 60)

    await alice.close()
    assert (await admin_api.delete("/api/admin/rooms/hall")).status_code == 204
    await admin_api.create_room("HALL", public=True)
    alice = await chatters(token)
    ack = await alice.call("join", {"room": "hall", "since_id": 5, "epoch": new_epoch})
    assert ack["ok"] is True and ack["room"] == "HALL" and ack.get("reset") is True
    assert ack["history"] == [] and ack["epoch"] not in (old_epoch, new_epoch)
    bob = await chatters(await admin_api.token_for("bob"))
    assert (await bob.call("join", {"room": "Hall"}))["ok"]
    assert (await bob.call("message", {"room": "hall", "msg": "fresh"}))["id"] == 1
    [fresh] = await alice.wait_for("message")
    assert (fresh["room"], fresh["id"], fresh["msg"]) == ("HALL", 1, "fresh")


@pytest.mark.parametrize("settings_overrides", [{"max_recovery": 30, "messages_per_10s": 1000}])
async def test_capped_recovery_racing_busy_senders_misses_nothing(
    server: Server, admin_api: Api, chatters: Connect
) -> None:
    """Readers come back (since_id old and recent) while four sockets post: each takes its capped
    recovery, reads the rest with after_id pages up to its first live message, and then has every
    id after its since_id exactly once."""
    await admin_api.create_room("busy", public=True)
    await store_straight(server, "busy", 300)
    token = str(admin_api.token)
    senders = [await chatters(token) for _ in range(4)]
    for sender in senders:
        assert (await sender.call("join", {"room": "busy"}))["ok"]

    async def post(sender: Chatter, i: int) -> None:
        for n in range(20):
            assert (await sender.call("message", {"room": "busy", "msg": f"{i}-{n}"}))["ok"]

    async def come_back(k: int, since: int) -> tuple[int, Chatter, list[int], list[int]]:
        await asyncio.sleep(0.015 * k)
        reader = await chatters(token)
        ack = await reader.call("join", {"room": "busy", "since_id": since})
        history = ids(ack["history"])
        assert len(history) <= 30 and (ack["more"] is False or len(history) == 30), (since, ack["more"], history)
        got = list(history)
        while ack["more"]:  # read on until the first message that came live
            live = ids(reader.events["message"])
            if live and got[-1] >= live[0] - 1:
                break
            reply = await admin_api.get("/api/rooms/busy/messages", params={"after_id": got[-1], "limit": 200})
            page = ids(reply.json()["messages"])
            if not page:
                break
            got += page
        return since, reader, history, got

    results = await asyncio.gather(*(post(s, i) for i, s in enumerate(senders)),
                                   *(come_back(k, since) for k, since in enumerate([0, 150, 280, 0, 290, 5])))
    for since, reader, history, got in results[4:]:
        for _ in range(250):  # until the last message (id 380) came, live or in what was read
            live = ids(reader.events["message"])
            if 380 in got or 380 in live:
                break
            await asyncio.sleep(0.02)
        assert not set(history) & set(live), since  # none twice
        assert sorted(set(got) | set(live)) == span(since + 1, 380), (since, history[:3], live[:3])
