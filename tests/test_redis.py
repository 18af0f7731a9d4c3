"""Two servers sharing one database and one Redis broker (python-socketio's Redis manager)."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import add_admin, both_backends, make_settings, running
from tests.helpers import Api, Chatter

REDIS_ENV = "QUART_ROOMS_TEST_REDIS_URL"


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"Redis tests need {REDIS_ENV} (e.g. redis://127.0.0.1:6379/15)")
    return url


@both_backends
async def test_message_crosses_servers(redis_url: str, database_url: str, tmp_path: Path) -> None:
    """alice on server A and bob on server B share room red: each sees the other's message once."""
    shared = {"redis_url": redis_url, "redis_channel": f"test-{uuid.uuid4().hex}", "jwt_secret": secrets.token_urlsafe(32)}
    settings_a = make_settings(database_url, tmp_path / "a", **shared)
    settings_b = make_settings(database_url, tmp_path / "b", **shared)
    async with running(settings_a) as a, running(settings_b) as b:
        await add_admin(a)
        async with Api(a) as admin:
            await admin.login("admin", a.admin_password)
            for name in ("alice", "bob"):
                await admin.create_user(name)
            await admin.create_room("red")
            await admin.grant("red", "alice")
            await admin.grant("red", "bob")
            alice, bob = Chatter(a.url), Chatter(b.url)
            try:
                await alice.connect(await admin.token_for("alice"))
                await bob.connect(await admin.token_for("bob"))  # a token from A works on B
                assert (await alice.call("join", {"room": "red"}))["ok"]
                assert (await bob.call("join", {"room": "red"}))["ok"]
                first = await alice.call("message", {"room": "red", "msg": "from A"})
                second = await bob.call("message", {"room": "red", "msg": "from B"})
                assert (first["id"], second["id"]) == (1, 2)
                for chatter in (alice, bob):
                    got = await chatter.wait_for("message", 2)
                    assert [(m["id"], m["msg"]) for m in got] == [(1, "from A"), (2, "from B")]
                await alice.settle()
                assert len(alice.events["message"]) == len(bob.events["message"]) == 2
                # A revoke made through A kicks bob's socket on B at once.
                await admin.revoke("red", "bob")
                [kicked] = await bob.wait_for("kicked")
                assert kicked == {"room": "red", "reason": "revoked"}
                await alice.call("message", {"room": "red", "msg": "after the kick"})
                await alice.wait_for("message", 3)
                await bob.settle()
                assert len(bob.events["message"]) == 2
                refused = await bob.call("message", {"room": "red", "msg": "still here?"})
                assert refused["error"] == "not_in_room"
                assert (await bob.call("join", {"room": "red"}))["error"] == "forbidden"
                # Disabling alice through B disconnects her socket on A.
                async with Api(b) as admin_b:
                    await admin_b.login("admin", b.admin_password)
                    reply = await admin_b.patch("/api/admin/users/alice", json={"disabled": True})
                    assert reply.status_code == 200
                await alice.wait_disconnected()
            finally:
                await alice.close()
                await bob.close()
        async with Api(b) as anonymous:
            ready = (await anonymous.get("/readyz")).json()
            assert ready["checks"] == {"database": "ok", "broker": "ok"}


async def test_readyz_says_when_the_broker_is_down(database_url: str, tmp_path: Path) -> None:
    """With a Redis URL nobody answers at, /readyz is 503 and names the broker."""
    from tests.conftest import free_port

    settings = make_settings(database_url, tmp_path / "i", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with running(settings) as server, Api(server) as anonymous:
        reply = await anonymous.get("/readyz")
        assert reply.status_code == 503
        assert reply.json() == {"status": "unavailable", "checks": {"database": "ok", "broker": "unavailable"}}
        assert (await anonymous.get("/healthz")).status_code == 200


def test_serve_with_two_workers_shares_rooms(redis_url: str, tmp_path: Path) -> None:
    """`quart-rooms serve --workers 2` with Redis: every socket of a room gets each message once, in order."""
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
    env |= {"QUART_ROOMS_REDIS_URL": redis_url, "QUART_ROOMS_REDIS_CHANNEL": f"test-{uuid.uuid4().hex}"}
    cli = [sys.executable, "-m", "quart_rooms.cli"]
    made = subprocess.run(cli + ["create-user", "root", "--admin"], cwd=tmp_path, env=env,
                          input="root-password\n", capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    server = subprocess.Popen(cli + ["serve", "--port", str(port), "--workers", "2"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("serve --workers 2 did not start")
        token = httpx.post(url + "/api/auth/login", json={"username": "root", "password": "root-password"}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        assert httpx.post(url + "/api/admin/rooms", json={"name": "all", "public": True}, headers=headers).status_code == 201

        async def talk() -> list[list[int]]:
            sockets = [Chatter(url) for _ in range(8)]
            try:
                for chatter in sockets:
                    await chatter.connect(token["access_token"])
                    assert (await chatter.call("join", {"room": "all"}))["ok"]
                for n in range(6):
                    ack = await sockets[n].call("message", {"room": "all", "msg": f"m{n}"})
                    assert ack["ok"], ack
                return [[m["id"] for m in await chatter.wait_for("message", 6)] for chatter in sockets]
            finally:
                for chatter in sockets:
                    await chatter.close()

        seen = asyncio.run(talk())
        assert all(ids == [1, 2, 3, 4, 5, 6] for ids in seen), seen
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=20)


async def test_deployments_sharing_a_redis_server_hear_nothing_of_each_other(redis_url: str, tmp_path: Path) -> None:
    """Two deployments (two databases) on one Redis server: with their own db numbers and the default
    channel nothing crosses (pub/sub ignores db numbers); on the same db and channel the second refuses
    to start, naming the setting."""
    base, _, _db = redis_url.rpartition("/")
    secret = secrets.token_urlsafe(32)
    channel = f"shared-{uuid.uuid4().hex}"  # one name for both deployments (fresh per run: claims last 60 s)

    def settings(name: str, db: int) -> Any:
        return make_settings(f"sqlite+aiosqlite:///{tmp_path / name}.db", tmp_path / name,
                             redis_url=f"{base}/{db}", redis_channel=channel, jwt_secret=secret)

    async with running(settings("one", 13)) as one, running(settings("two", 14)) as two:
        chatters = []
        for server in (one, two):
            await add_admin(server)
            async with Api(server) as admin:
                await admin.login("admin", server.admin_password)
                await admin.create_room("ops", public=True)  # the same name, epoch and ids in both
                chatter = Chatter(server.url)
                await chatter.connect(await admin.token_for("admin", server.admin_password))
                assert (await chatter.call("join", {"room": "ops"}))["ok"]
                chatters.append(chatter)
        try:
            assert (await chatters[0].call("message", {"room": "ops", "msg": "only in one"}))["ok"]
            await chatters[0].wait_for("message")
            await chatters[1].settle(0.8)  # several heartbeats and a feed poll
            assert chatters[1].events["message"] == [] and chatters[1].events["presence"] == []
        finally:
            for chatter in chatters:
                await chatter.close()
        with pytest.raises(Exception, match=f"redis_channel '{channel}'.*another deployment"):
            async with running(settings("three", 13)):
                pass
