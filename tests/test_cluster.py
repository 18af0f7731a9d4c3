"""Two nodes, one order (issue 9): nodes A and B in this process on one PostgreSQL database and one Redis.

What users of different nodes see: every member gets a room's messages once
and in id order whoever sent them and wherever (python-socketio and the
official JavaScript client), one socket's messages keep its send order,
presence counts users on both nodes, a join with since_id during a burst is
exact, a revoke reaches the other node at once, a client_id retried through
both nodes is stored once, and rate limits and sign-in throttles count across
nodes. Broker faults and real processes: tests/test_cluster_faults.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cluster_support import (
    CLEAN,
    admin_of,
    close_all,
    connected,
    ids_of,
    joined,
    make_users,
    node_or_skip,
    order_report,
    postgres_only,
    redis_url_or_skip,
    run_js_clients,
    send_many,
    two_nodes,
    wait_until,
)
from tests.helpers import Api, Chatter

PLENTY = 100_000  # messages_per_10s where the rate limit is not what a test is about


@pytest.fixture
def redis_url() -> str:
    return redis_url_or_skip()


@postgres_only
async def test_every_member_gets_every_message_once_in_order_across_nodes(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """4 senders on each node (8 in flight each), 10 members on both nodes: all get ids 1..N once, in order."""
    per_sender = 40
    async with two_nodes(database_url, tmp_path, redis_url, messages_per_10s=PLENTY) as (a, b):
        admin = await admin_of(a)
        async with admin:
            await admin.create_room("all", public=True)
            tokens = await make_users(admin, [f"m{i}" for i in range(10)])
        members: list[Chatter] = []
        try:
            for i, token in enumerate(tokens.values()):
                members.append((await joined((a if i < 5 else b).url, token, "all"))[0])
            senders = members[0:4] + members[5:9]
            results = await asyncio.gather(*(send_many(s, "all", per_sender, tag=f"s{n}-") for n, s in enumerate(senders)))
            total = per_sender * len(senders)
            acks = [ack for acks in results for ack in acks]
            assert all(ack.get("ok") for ack in acks), [ack for ack in acks if not ack.get("ok")][:5]
            assert sorted(ack["id"] for ack in acks) == list(range(1, total + 1))  # gapless, none twice
            for acks_of_one in results:  # one socket's messages get ids in its send order
                assert [ack["id"] for ack in acks_of_one] == sorted(ack["id"] for ack in acks_of_one)
            for member in members:
                await member.wait_for("message", total, timeout=20)
            await members[0].settle(0.5)
            reports = {n: order_report(ids_of(m.events["message"]), range(1, total + 1)) for n, m in enumerate(members)}
            assert all(r == CLEAN for r in reports.values()), reports
            # Each member got the message objects as stored: the text its sender sent under that id.
            texts = {ack["id"]: f"s{n}-{i}" for n, acks_of_one in enumerate(results) for i, ack in enumerate(acks_of_one)}
            for member in (members[0], members[9]):
                assert {m["id"]: m["msg"] for m in member.events["message"]} == texts
        finally:
            await close_all(members)


@postgres_only
async def test_javascript_clients_with_default_transports_across_nodes(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """The official JS client as browsers use it (polling, then the upgrade): 10 members, 8 senders, both nodes."""
    node_or_skip()
    per_sender = 40
    async with two_nodes(database_url, tmp_path, redis_url, messages_per_10s=PLENTY) as (a, b):
        admin = await admin_of(a)
        async with admin:
            await admin.create_room("all", public=True)
            tokens = await make_users(admin, [f"js{i}" for i in range(10)])
        clients = [
            {"name": name, "url": (a if i < 5 else b).url, "token": token, "send": per_sender if i % 5 != 4 else 0}
            for i, (name, token) in enumerate(tokens.items())
        ]
        total = per_sender * 8
        result = await run_js_clients({"room": "all", "total": total, "inflight": 8, "clients": clients})
    states = result["clients"]
    assert all(s["join"] and s["join"]["ok"] for s in states), [(s["name"], s["join"], s["errors"]) for s in states]
    assert all(s["errors"] == [] for s in states), [(s["name"], s["errors"]) for s in states]
    acks = [ack for s in states for ack in s["acks"]]
    assert len(acks) == total and all(ack and ack["ok"] for ack in acks), [a for a in acks if not (a and a["ok"])][:5]
    assert sorted(ack["id"] for ack in acks) == list(range(1, total + 1))
    reports = {s["name"]: order_report(s["received"], range(1, total + 1)) for s in states}
    assert all(r == CLEAN for r in reports.values()), reports
    assert {s["transport"] for s in states} == {"websocket"}  # every client upgraded from polling


@postgres_only
@pytest.mark.parametrize("window", [None, 48], ids=["back_to_back", "48_in_flight"])
async def test_one_sockets_messages_keep_send_order(
    redis_url: str, database_url: str, tmp_path: Path, window: int | None
) -> None:
    """200 messages of one socket, emitted back to back (no waiting for acks) or with at most 48
    unacknowledged: all accepted, ids increase in send order, stored and delivered in that order."""
    count = 200
    async with two_nodes(database_url, tmp_path, redis_url, messages_per_10s=PLENTY) as (a, b):
        admin = await admin_of(a)
        async with admin:
            await admin.create_room("line", public=True)
            tokens = await make_users(admin, ["writer", "reader"])
            sender, _ = await joined(a.url, tokens["writer"], "line")
            reader, _ = await joined(b.url, tokens["reader"], "line")
            try:
                acks: list[Any] = [None] * count
                done = asyncio.Event()

                def acked(i: int) -> Any:
                    def callback(*data: Any) -> None:
                        acks[i] = data[0] if data else None
                        if all(x is not None for x in acks):
                            done.set()
                    return callback

                for i in range(count):
                    if window is not None:
                        await wait_until(lambda i=i: sum(x is not None for x in acks) >= i - window + 1
                                         or not sender.sio.connected, 10, "room in the window", step=0.001)
                    await sender.sio.emit("message", {"room": "line", "msg": f"n{i}"}, callback=acked(i))
                await wait_until(lambda: done.is_set() or not sender.sio.connected, 20, "the acks")
                assert sender.sio.connected, (
                    f"the server closed the sending socket after {sum(x is not None for x in acks)} of {count} acks")
                refused = [(i, ack) for i, ack in enumerate(acks) if not ack.get("ok")]
                assert refused == [], f"{len(refused)} of {count} refused, first: {refused[:3]}"
                assert [ack["id"] for ack in acks] == list(range(1, count + 1))
                stored = (await admin.get("/api/rooms/line/messages", params={"limit": 200})).json()["messages"]
                assert [m["msg"] for m in stored] == [f"n{i}" for i in range(count)]
                got = await reader.wait_for("message", count, timeout=10)
                assert [(m["id"], m["msg"]) for m in got] == [(i + 1, f"n{i}") for i in range(count)]
            finally:
                await close_all([sender, reader])


@postgres_only
async def test_presence_counts_users_on_both_nodes(redis_url: str, database_url: str, tmp_path: Path) -> None:
    """members spans nodes; a user on both nodes is `joined` once and `left` once, when the last socket goes."""
    async with two_nodes(database_url, tmp_path, redis_url) as (a, b):
        admin = await admin_of(a)
        async with admin:
            await admin.create_room("lobby", public=True)
            tokens = await make_users(admin, ["alice", "bob", "carol", "erin", "dave"])
        chatters: list[Chatter] = []
        try:
            alice, _ = await joined(a.url, tokens["alice"], "lobby")
            chatters.append(alice)
            bob, ack = await joined(b.url, tokens["bob"], "lobby")
            chatters.append(bob)
            assert ack["members"] == ["alice", "bob"]
            watchers = {"alice": alice, "bob": bob}

            def about(user: str) -> dict[str, list[str]]:
                return {name: [p["action"] for p in w.events["presence"] if p["user"] == user]
                        for name, w in watchers.items()}

            await alice.wait_for("presence")  # bob joined
            # carol: first socket on A, second on B.
            carol_a, ack = await joined(a.url, tokens["carol"], "lobby")
            chatters.append(carol_a)
            assert ack["members"] == ["alice", "bob", "carol"]
            await wait_until(lambda: about("carol") == {"alice": ["joined"], "bob": ["joined"]}, 3, "carol joined")
            carol_b, ack = await joined(b.url, tokens["carol"], "lobby")
            chatters.append(carol_b)
            assert ack["members"] == ["alice", "bob", "carol"]
            assert (await carol_a.call("leave", {"room": "lobby"}))["ok"]
            await alice.settle(0.6)
            assert about("carol") == {"alice": ["joined"], "bob": ["joined"]}  # still there through B
            assert carol_a.events["presence"] == [] and carol_b.events["presence"] == []
            await carol_b.close()
            await wait_until(lambda: about("carol") == {"alice": ["joined", "left"], "bob": ["joined", "left"]},
                             3, f"carol left once: {about('carol')}")
            # erin joins on both nodes at the same moment, then leaves from both at the same moment.
            erin_a, erin_b = await connected(a.url, tokens["erin"]), await connected(b.url, tokens["erin"])
            chatters += [erin_a, erin_b]
            acks = await asyncio.gather(erin_a.call("join", {"room": "lobby"}), erin_b.call("join", {"room": "lobby"}))
            assert all(ack["ok"] for ack in acks)
            await wait_until(lambda: about("erin") == {"alice": ["joined"], "bob": ["joined"]}, 3, "erin joined")
            await asyncio.gather(erin_a.close(), erin_b.close())
            await wait_until(lambda: about("erin") == {"alice": ["joined", "left"], "bob": ["joined", "left"]},
                             3, f"erin left once: {about('erin')}")
            await alice.settle(0.5)
            assert about("erin") == {"alice": ["joined", "left"], "bob": ["joined", "left"]}
            assert about("carol") == {"alice": ["joined", "left"], "bob": ["joined", "left"]}
            dave, ack = await joined(b.url, tokens["dave"], "lobby")
            chatters.append(dave)
            assert ack["members"] == ["alice", "bob", "dave"]
        finally:
            await close_all(chatters)


@postgres_only
async def test_a_socket_gone_in_the_middle_of_its_join_is_not_a_member(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """Sockets that disconnect right after sending `join`, on both nodes: none of them stays in `members`.

    Waves of such sockets (alternating nodes, gone 0-12 ms after the join went out), each wave in a room
    of its own and with more users at once than the one before.
    """
    waves = {"lobby0": 3, "lobby1": 5, "lobby2": 8}  # room: users at once
    async with two_nodes(database_url, tmp_path, redis_url) as (a, b):
        admin = await admin_of(a)
        async with admin:
            for room in waves:
                await admin.create_room(room, public=True)
            tokens = await make_users(admin, ["watcher", *(f"g{i}" for i in range(max(waves.values())))])
        watcher = await connected(a.url, tokens["watcher"])
        rng = random.Random(9)
        try:
            async def ghost(name: str, room: str, rounds: int) -> None:
                for r in range(rounds):
                    chatter = await connected((a, b)[r % 2].url, tokens[name])
                    await chatter.sio.emit("join", {"room": room})
                    delay = rng.choice([0, 0, 0.001, 0.002, 0.003, 0.005, 0.008, 0.012])
                    if delay:
                        await asyncio.sleep(delay)
                    await chatter.close()

            stayed = {}
            for room, users in waves.items():
                assert (await watcher.call("join", {"room": room}))["ok"]
                await asyncio.gather(*(ghost(f"g{i}", room, 6) for i in range(users)))
                await asyncio.sleep(0.3)
                for node in (a, b):
                    probe, ack = await joined(node.url, tokens["watcher"], room)
                    await probe.close()
                    if ack["members"] != ["watcher"]:
                        stayed[f"{room} on {node.url}"] = ack["members"]
            assert stayed == {}, f"sockets gone during their join are still members: {stayed}"
            # What the watcher was told about each ghost ends with `left` (or nothing at all).
            last: dict[tuple[str, str], str] = {}
            for event in watcher.events["presence"]:
                last[(event["room"], event["user"])] = event["action"]
            assert all(action == "left" for action in last.values()), last
        finally:
            await close_all([watcher])


@postgres_only
async def test_join_since_id_on_one_node_during_a_burst_on_the_other(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """20 joins with since_id on A while B (and A) commit a burst: history + live = every later id, once, in order."""
    per_writer = 190  # 220 + 4 x 190 = 980 messages: a join from 0 stays within max_recovery (1000)
    async with two_nodes(database_url, tmp_path, redis_url, messages_per_10s=PLENTY) as (a, b):
        admin = await admin_of(a)
        async with admin:
            await admin.create_room("burst", public=True)
            tokens = await make_users(admin, ["w0", "w1", "w2", "w3", "r0", "r1"])
        writers = [(await joined(b.url, tokens[f"w{i}"], "burst"))[0] for i in range(3)]
        writers.append((await joined(a.url, tokens["w3"], "burst"))[0])
        readers = [await connected(a.url, tokens[f"r{i % 2}"]) for i in range(20)]
        rng = random.Random(3)
        newest = [0]
        joins: list[tuple[Chatter, int, dict[str, Any]]] = []
        try:
            def seen(ack: dict[str, Any]) -> None:
                if ack.get("ok"):
                    newest[0] = max(newest[0], ack["id"])

            # Some history before the burst, so early since_ids reach back past the feeds' memory (200).
            await send_many(writers[0], "burst", 220, tag="pre-", on_ack=seen)
            total = 220 + per_writer * len(writers)

            async def join_during_burst() -> None:
                for n, reader in enumerate(readers):
                    await asyncio.sleep(0.01 + rng.random() * 0.03)
                    since = max(0, newest[0] - rng.choice([0, 1, 3, 10, 40, 120, 260, newest[0]]))
                    ack = await reader.call("join", {"room": "burst", "since_id": since})
                    assert ack["ok"] and not ack.get("more"), ack
                    joins.append((reader, since, ack))

            burst = asyncio.gather(*(send_many(w, "burst", per_writer, tag=f"w{i}-", on_ack=seen)
                                     for i, w in enumerate(writers)))
            await join_during_burst()
            results = await burst
            assert all(ack.get("ok") for acks in results for ack in acks)
            assert newest[0] == total
            during = sum(1 for _, since, ack in joins if ack["history"] and ack["history"][-1]["id"] < total)
            assert during >= 10, f"only {during} of 20 joins happened while the burst went on"
            problems = {}
            for n, (reader, since, ack) in enumerate(joins):
                history = ids_of(ack["history"])
                await wait_until(lambda r=reader, h=history, s=since: max(s, *h[-1:], *ids_of(r.events["message"])[-1:]) >= total,
                                 10, f"join {n} to reach {total}")  # a join after the burst (since = total) has it all
                seen_ids = history + ids_of(reader.events["message"])
                report = order_report(seen_ids, range(since + 1, total + 1))
                if report != CLEAN:
                    problems[n] = (since, len(history), report)
            await readers[0].settle(0.3)
            for n, (reader, since, ack) in enumerate(joins):
                seen_ids = ids_of(ack["history"]) + ids_of(reader.events["message"])
                if order_report(seen_ids, range(since + 1, total + 1)) != CLEAN:
                    problems.setdefault(n, (since, len(ack["history"]), order_report(seen_ids, range(since + 1, total + 1))))
            assert problems == {}, problems
        finally:
            await close_all(writers + readers)


@postgres_only
async def test_revoke_through_one_node_kicks_on_the_other_at_once(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """bob on B is kicked within 1 s of a revoke made through A, and hears nothing more from the room."""
    async with two_nodes(database_url, tmp_path, redis_url) as (a, b):
        admin = await admin_of(a)
        async with admin:
            await admin.create_room("secret")
            tokens = await make_users(admin, ["alice", "bob"])
            await admin.grant("secret", "alice")
            await admin.grant("secret", "bob")
            alice, _ = await joined(a.url, tokens["alice"], "secret")
            bob, _ = await joined(b.url, tokens["bob"], "secret")
            try:
                assert (await alice.call("message", {"room": "secret", "msg": "before"}))["ok"]
                await bob.wait_for("message")
                started = time.monotonic()
                await admin.revoke("secret", "bob")
                [kicked] = await bob.wait_for("kicked", timeout=5)
                took = time.monotonic() - started
                assert kicked == {"room": "secret", "reason": "revoked"}
                assert took < 1.0, f"the kick reached B {took:.2f} s after the revoke through A"
                await bob.wait_for("access", timeout=2)
                assert bob.events["access"] == [{"room": "secret", "role": None}]
                assert (await alice.call("message", {"room": "secret", "msg": "after"}))["ok"]
                await alice.wait_for("message", 2)
                await bob.settle(0.5)
                assert [m["msg"] for m in bob.events["message"]] == ["before"]
                assert (await bob.call("join", {"room": "secret"}))["error"] == "forbidden"
            finally:
                await close_all([alice, bob])


@postgres_only
async def test_same_client_id_through_both_nodes_at_once_is_stored_once(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """alice retries each client_id on A and B at the same moment: one id for both, one row; the others all pass."""
    rounds = 15
    async with two_nodes(database_url, tmp_path, redis_url, messages_per_10s=PLENTY) as (a, b):
        admin = await admin_of(a)
        async with admin:
            await admin.create_room("dup", public=True)
            tokens = await make_users(admin, ["alice", "bob", "carol"])
            alice_a, _ = await joined(a.url, tokens["alice"], "dup")
            alice_b, _ = await joined(b.url, tokens["alice"], "dup")
            bob, _ = await joined(a.url, tokens["bob"], "dup")
            carol, _ = await joined(b.url, tokens["carol"], "dup")
            everyone = [alice_a, alice_b, bob, carol]
            try:
                for r in range(rounds):
                    same = {"room": "dup", "msg": f"dup{r}", "client_id": f"cid-{r}"}
                    acks = await asyncio.gather(
                        alice_a.call("message", same), alice_b.call("message", same),
                        bob.call("message", {"room": "dup", "msg": f"bob{r}"}),
                        carol.call("message", {"room": "dup", "msg": f"carol{r}"}),
                        bob.call("message", {"room": "dup", "msg": f"bob{r}b"}),
                    )
                    assert all(ack["ok"] for ack in acks), (r, acks)
                    assert acks[0]["id"] == acks[1]["id"], (r, acks)
                total = rounds * 4
                stored = (await admin.get("/api/rooms/dup/messages", params={"limit": 200})).json()["messages"]
                assert ids_of(stored) == list(range(1, total + 1))
                texts = [m["msg"] for m in stored]
                assert all(texts.count(f"dup{r}") == 1 for r in range(rounds)), texts
                for chatter in everyone:
                    got = await chatter.wait_for("message", total, timeout=10)
                    assert order_report(ids_of(got), range(1, total + 1)) == CLEAN
                await bob.settle(0.3)
                assert all(len(c.events["message"]) == total for c in everyone)
            finally:
                await close_all(everyone)


@postgres_only
async def test_message_rate_limit_is_shared_by_both_nodes(redis_url: str, database_url: str, tmp_path: Path) -> None:
    """messages_per_10s = 20: 40 messages of one user, half through each node -> 20 accepted, 20 rate_limited."""
    async with two_nodes(database_url, tmp_path, redis_url, messages_per_10s=20) as (a, b):
        admin = await admin_of(a)
        async with admin:
            await admin.create_room("lim", public=True)
            tokens = await make_users(admin, ["alice"])
            on_a, _ = await joined(a.url, tokens["alice"], "lim")
            on_b, _ = await joined(b.url, tokens["alice"], "lim")
            try:
                acks = await asyncio.gather(*(
                    (on_a if i % 2 else on_b).call("message", {"room": "lim", "msg": f"m{i}"}) for i in range(40)
                ))
                accepted = [ack for ack in acks if ack["ok"]]
                refused = [ack for ack in acks if not ack["ok"]]
                assert len(accepted) == 20, f"{len(accepted)} accepted"
                assert {ack["error"] for ack in refused} == {"rate_limited"}
                waits = [ack.get("retry_after") for ack in refused]
                assert all(isinstance(w, int | float) and 0 < w <= 10 for w in waits), waits
                stored = (await admin.get("/api/rooms/lim/messages", params={"limit": 200})).json()["messages"]
                assert len(stored) == 20
            finally:
                await close_all([on_a, on_b])


@postgres_only
async def test_sign_in_throttle_counts_failures_on_both_nodes(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """login_failures_per_account = 5: 5 failures split over A and B lock the account on both nodes."""
    async with two_nodes(database_url, tmp_path, redis_url, login_failures_per_account=5) as (a, b):
        admin = await admin_of(a)
        async with admin:
            await admin.create_user("alice")
        async with Api(a) as on_a, Api(b) as on_b:
            for n in range(5):
                api = (on_a, on_b)[n % 2]
                reply = await api.http.post("/api/auth/login", json={"username": "alice", "password": f"wrong-{n}"})
                assert reply.status_code == 401, (n, reply.text)
            for api in (on_b, on_a):  # even the right password waits now, on either node
                reply = await api.http.post("/api/auth/login", json={"username": "alice", "password": "password-123"})
                assert reply.status_code == 429, reply.text
                assert reply.json()["error"]["code"] == "rate_limited"
                assert float(reply.headers["Retry-After"]) > 0
