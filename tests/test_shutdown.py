"""Stopping: SIGTERM/SIGINT drain the server within shutdown_timeout, keep every acked message,
and close the sockets so that clients reconnect (contract 1.1, "Shutdown")."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from tests.conftest import free_port

SHUTDOWN_TIMEOUT = 4


class Served:
    """`quart-rooms serve` as a real process in a folder of its own."""

    def __init__(self, folder: Path, port: int, env: dict[str, str], args: list[str]) -> None:
        self.folder, self.port, self.env, self.args = folder, port, env, args
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[str] | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "quart_rooms.cli", "serve", "--port", str(self.port), *self.args],
            cwd=self.folder, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                assert self.process.poll() is None, self.process.communicate()[0]
                try:
                    if (await client.get(self.url + "/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("serve did not start")

    def stop(self, signum: int) -> tuple[float, int, str]:
        """Send the signal; (seconds until exit, exit code, everything it printed)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signum)
        output, _ = self.process.communicate(timeout=SHUTDOWN_TIMEOUT + 20)
        return time.monotonic() - started, self.process.returncode, output

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
    env.update({"QUART_ROOMS_JWT_SECRET": secrets.token_urlsafe(32),
                "QUART_ROOMS_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
                "QUART_ROOMS_MESSAGES_PER_10S": "100000"})
    env.update({f"QUART_ROOMS_{key.upper()}": value for key, value in settings.items()})
    return env


async def _prepare(served: Served) -> str:
    """An admin and a public room; the admin's access token."""
    created = subprocess.run(
        [sys.executable, "-m", "quart_rooms.cli", "create-user", "boss", "--admin"],
        cwd=served.folder, env=served.env, input="boss-password\n", capture_output=True, text=True, timeout=60,
    )
    assert created.returncode == 0, created.stderr
    async with httpx.AsyncClient(base_url=served.url) as http:
        reply = await http.post("/api/auth/login", json={"username": "boss", "password": "boss-password"})
        token = str(reply.json()["access_token"])
        room = await http.post("/api/admin/rooms", json={"name": "lobby", "public": True},
                               headers={"Authorization": f"Bearer {token}"})
        assert room.status_code == 201, room.text
    return token


async def _post_until_closed(client: socketio.AsyncClient, acked: list[int], refused: list[str]) -> None:
    """Post with four messages in flight until the connection goes; record acked ids and refusals."""
    async def one(n: int) -> None:
        try:
            ack = await client.call("message", {"room": "lobby", "msg": f"m{n}"}, timeout=5)
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
            return
        if ack.get("ok"):
            acked.append(ack["id"])
        else:
            refused.append(ack["error"])

    n = 0
    while client.connected:
        await asyncio.gather(*(one(n + i) for i in range(4)))
        n += 4


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_drains_keeps_acked_messages_and_clients_come_back(tmp_path: Path, signum: int) -> None:
    port = free_port()
    served = Served(tmp_path, port, _env(), [])
    await served.start()
    client = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2, reconnection_delay_max=0.5)
    reasons: list[Any] = []
    connects = asyncio.Event()
    client.on("disconnect", lambda reason=None: reasons.append(reason))
    client.on("connect", lambda: connects.set())
    try:
        token = await _prepare(served)
        await client.connect(served.url, auth={"token": token}, transports=["websocket"], wait_timeout=5)
        assert (await client.call("join", {"room": "lobby"}))["ok"]
        acked: list[int] = []
        refused: list[str] = []
        posting = asyncio.create_task(_post_until_closed(client, acked, refused))
        for _ in range(200):  # a steady stream is under way
            if len(acked) >= 40 or posting.done():
                break
            await asyncio.sleep(0.05)
        assert len(acked) >= 40 and not refused, (len(acked), refused[:3])
        seconds, code, output = await asyncio.to_thread(served.stop, signum)
        await asyncio.wait_for(posting, 10)
        assert code == 0, output
        assert seconds < SHUTDOWN_TIMEOUT + 1.5, f"stopped after {seconds:.1f} s"
        assert "Traceback" not in output and "CancelledError" not in output, output
        assert set(refused) <= {"unavailable"}, refused
        # The socket was closed under the client, not sent away: it keeps trying to come back.
        assert reasons and "server disconnect" not in reasons, reasons
        connects.clear()
        await served.start()  # the same port and folder
        await asyncio.wait_for(connects.wait(), 10)
        async with httpx.AsyncClient(base_url=served.url) as http:
            stored = (await http.get("/api/rooms/lobby/messages", params={"after_id": 0, "limit": 200},
                                     headers={"Authorization": f"Bearer {token}"})).json()["messages"]
        ids = [m["id"] for m in stored]
        assert ids == list(range(1, len(ids) + 1))  # gapless
        assert set(acked) <= set(ids), sorted(set(acked) - set(ids))  # every acked message was stored
    finally:
        await client.disconnect()
        served.kill()


async def test_workers_drain_together(tmp_path: Path, database_url: str) -> None:
    """serve --workers 2 on PostgreSQL and Redis: SIGTERM stops both workers within shutdown_timeout."""
    redis_url = os.environ.get("QUART_ROOMS_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("needs QUART_ROOMS_TEST_REDIS_URL")
    served = Served(tmp_path, free_port(), _env(
        database_url=database_url, redis_url=redis_url, redis_channel=f"shutdown-{secrets.token_hex(4)}"),
        ["--workers", "2"])
    await served.start()
    try:
        token = await _prepare(served)
        clients = [socketio.AsyncClient(reconnection=False) for _ in range(4)]
        for client in clients:
            await client.connect(served.url, auth={"token": token}, transports=["websocket"], wait_timeout=5)
        seconds, code, output = await asyncio.to_thread(served.stop, signal.SIGTERM)
        assert code == 0, output
        assert seconds < SHUTDOWN_TIMEOUT + 5.5, f"stopped after {seconds:.1f} s"
        assert "Traceback" not in output, output
        await asyncio.sleep(0.3)
        assert not any(client.connected for client in clients)
    finally:
        served.kill()


@pytest.fixture
def backend() -> str:
    return "postgres"
