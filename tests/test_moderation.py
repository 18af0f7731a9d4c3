"""Moderation over the API (contract 1.1, "Moderation", "Access changes are pushed both ways"):
moderators' grant routes, message deletion with tombstones, and `access` events, on one node and
across two nodes sharing PostgreSQL and Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cluster_support import admin_of, joined, make_users, postgres_only, redis_url_or_skip, two_nodes
from tests.conftest import both_backends
from tests.helpers import Api, Server, chatters, cheap_passwords


@pytest.fixture
def redis_url() -> str:
    return redis_url_or_skip()


async def _users(admin_api: Api, *names: str) -> dict[str, Api]:
    """Accounts signed in over HTTP, by name."""
    clients: dict[str, Api] = {}
    for name in names:
        await admin_api.create_user(name)
        client = Api(admin_api.server)
        await client.__aenter__()
        await client.login(name, "password-123")
        clients[name] = client
    return clients


@both_backends
async def test_a_moderator_manages_read_and_write_in_their_room_only(
    server: Server, admin_api: Api, chatters: Any, cheap_passwords: None
) -> None:
    """A moderator grants and revokes read/write in their room (revoking kicks at once); they may not
    give `moderate`, act in another room, or touch a moderator; a writer may not grant at all."""
    await admin_api.create_room("hall")
    await admin_api.create_room("other")
    people = await _users(admin_api, "mod", "writer", "newbie", "peer")
    try:
        await admin_api.grant("hall", "mod", "moderate")
        await admin_api.grant("hall", "peer", "moderate")
        await admin_api.grant("hall", "writer", "write")
        await admin_api.grant("other", "newbie", "read")
        mod, writer = people["mod"], people["writer"]

        reply = await mod.put("/api/rooms/hall/grants/newbie", json={"role": "write"})
        assert reply.status_code == 200 and reply.json() == {"room": "hall", "username": "newbie", "role": "write"}
        grants = (await mod.get("/api/rooms/hall/grants")).json()["grants"]
        assert {"username": "newbie", "role": "write"} in grants
        for path, body, why in [
            ("/api/rooms/hall/grants/newbie", {"role": "moderate"}, "only admins give moderate"),
            ("/api/rooms/hall/grants/peer", {"role": "read"}, "a moderator's role is the admins' to change"),
            ("/api/rooms/other/grants/newbie", {"role": "write"}, "not their room"),
        ]:
            refused = await mod.put(path, json=body)
            assert refused.status_code == 403, (why, refused.text)
            assert refused.json()["error"]["code"] == "forbidden"
        refused = await writer.put("/api/rooms/hall/grants/newbie", json={"role": "read"})
        assert refused.status_code == 403

        newbie = await chatters(people["newbie"].token)
        assert (await newbie.call("join", {"room": "hall"}))["role"] == "write"
        assert (await mod.delete("/api/rooms/hall/grants/newbie")).status_code == 204
        [kicked] = await newbie.wait_for("kicked", timeout=2)
        assert kicked["room"] == "hall"
        assert (await newbie.call("message", {"room": "hall", "msg": "still here?"}))["error"] == "not_in_room"
        assert (await newbie.call("join", {"room": "hall"}))["error"] == "forbidden"
        audit = (await admin_api.get("/api/admin/audit")).json()["entries"]
        assert any(e["actor"] == "mod" and "newbie" in e["target"] for e in audit)
    finally:
        for client in people.values():
            await client.__aexit__(None, None, None)


@both_backends
async def test_deleting_messages_leaves_tombstones_for_authors_moderators_and_admins(
    server: Server, admin_api: Api, chatters: Any, cheap_passwords: None
) -> None:
    """The author, a moderator of the room and an admin may delete; another writer may not. The
    message becomes a tombstone (text gone) in history and in join acks, members get
    `message_deleted` live, deleting again changes nothing, and ids stay gapless."""
    await admin_api.create_room("hall")
    people = await _users(admin_api, "author", "other", "mod")
    try:
        for name, role in (("author", "write"), ("other", "write"), ("mod", "moderate")):
            await admin_api.grant("hall", name, role)
        author = await chatters(people["author"].token)
        watcher = await chatters(people["other"].token)
        for chatter in (author, watcher):
            assert (await chatter.call("join", {"room": "hall"}))["ok"]
        ids = [(await author.call("message", {"room": "hall", "msg": f"secret {n}"}))["id"] for n in range(3)]
        assert ids == [1, 2, 3]

        forbidden = await people["other"].delete(f"/api/rooms/hall/messages/{ids[0]}")
        assert forbidden.status_code == 403
        for client, message_id in ((people["author"], ids[0]), (people["mod"], ids[1]), (admin_api, ids[2])):
            assert (await client.delete(f"/api/rooms/hall/messages/{message_id}")).status_code == 204
        assert (await people["author"].delete(f"/api/rooms/hall/messages/{ids[0]}")).status_code == 204  # again
        assert (await admin_api.delete("/api/rooms/hall/messages/99")).status_code == 404

        live = await watcher.wait_for("message_deleted", count=3, timeout=3)
        assert sorted(event["id"] for event in live) == ids and {e["room"] for e in live} == {"hall"}
        history = (await people["other"].get("/api/rooms/hall/messages")).json()["messages"]
        assert [m["id"] for m in history] == ids
        for message in history:
            assert message["deleted"] is True and message["user"] == "author" and "msg" not in message, message
        rejoin = await chatters(people["other"].token)
        ack = await rejoin.call("join", {"room": "hall", "since_id": 0})
        assert [(m["id"], m["deleted"]) for m in ack["history"]] == [(i, True) for i in ids]
        assert (await author.call("message", {"room": "hall", "msg": "after"}))["id"] == 4
    finally:
        for client in people.values():
            await client.__aexit__(None, None, None)


async def test_access_events_follow_grants_and_room_changes(
    server: Server, admin_api: Api, chatters: Any, cheap_passwords: None
) -> None:
    """Every socket of a user hears `access {room, role}` when their role changes: a grant, a change,
    a room made public, private again, and deleted (role null)."""
    await admin_api.create_room("hall")
    await admin_api.create_user("bob")
    token = await admin_api.token_for("bob")
    sockets = [await chatters(token), await chatters(token)]
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", "/api/admin/rooms/hall/grants/bob", {"role": "read"}),
        ("PUT", "/api/admin/rooms/hall/grants/bob", {"role": "moderate"}),
        ("DELETE", "/api/admin/rooms/hall/grants/bob", {}),
        ("PATCH", "/api/admin/rooms/hall", {"public": True}),
        ("PATCH", "/api/admin/rooms/hall", {"public": False}),
        ("PATCH", "/api/admin/rooms/hall", {"public": True}),
        ("DELETE", "/api/admin/rooms/hall", {}),
    ]
    expected = ["read", "moderate", None, "write", None, "write", None]
    for n, (method, path, body) in enumerate(steps, start=1):
        reply = await admin_api.request(method, path, **({"json": body} if body else {}))
        assert reply.status_code in (200, 204), reply.text
        for socket in sockets:
            await socket.wait_for("access", count=n, timeout=3)
    for socket in sockets:
        assert [e["role"] for e in socket.events["access"]] == expected
        assert {e["room"] for e in socket.events["access"]} == {"hall"}


@postgres_only
async def test_deletions_and_moderator_revokes_reach_the_other_node(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """A message deleted through node A reaches members on node B as `message_deleted` and as a
    tombstone in B's join history; a moderator's revoke made through B kicks a user on A at once."""
    async with two_nodes(database_url, tmp_path, redis_url) as (a, b):
        admin = await admin_of(a)
        async with admin:
            await admin.create_room("hall")
            tokens = await make_users(admin, ["author", "reader", "mod"])
            await admin.grant("hall", "author", "write")
            await admin.grant("hall", "reader", "read")
            await admin.grant("hall", "mod", "moderate")
        author, _ = await joined(a.url, tokens["author"], "hall")
        reader, _ = await joined(b.url, tokens["reader"], "hall")
        try:
            sent = await author.call("message", {"room": "hall", "msg": "oops"})
            await reader.wait_for("message", timeout=3)
            async with Api(a) as through_a:
                through_a.token = tokens["author"]
                assert (await through_a.delete(f"/api/rooms/hall/messages/{sent['id']}")).status_code == 204
            [deleted] = await reader.wait_for("message_deleted", timeout=3)
            assert deleted == {"room": "hall", "id": sent["id"]}
            late, ack = await joined(b.url, tokens["reader"], "hall")
            await late.close()
            assert [(m["id"], m.get("deleted")) for m in ack["history"]] == [(sent["id"], True)]

            async with Api(b) as through_b:
                through_b.token = tokens["mod"]
                assert (await through_b.delete("/api/rooms/hall/grants/author")).status_code == 204
            [kicked] = await author.wait_for("kicked", timeout=1.5)
            assert kicked["room"] == "hall"
            assert (await author.call("message", {"room": "hall", "msg": "gone"}))["error"] == "not_in_room"
        finally:
            await author.close()
            await reader.close()
