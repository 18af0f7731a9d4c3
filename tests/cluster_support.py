"""Helpers of the multi-node tests (tests/test_cluster.py, tests/test_cluster_faults.py).

Two nodes in this test process (`two_nodes`), nodes as real `quart-rooms serve`
processes (`NodeProcess`), a private redis-server that a test may stop, hang
and start again (`RedisServer`), the official JavaScript client driven by
tests/js/cluster.mjs (`run_js_clients`), and checks of what members received
(`order_report`).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import ADMIN_PASSWORD, add_admin, free_port, make_settings, running
from tests.helpers import Api, Chatter, Server

REDIS_ENV = "QUART_ROOMS_TEST_REDIS_URL"
JS_DIR = Path(__file__).parent / "js"
CLI = [sys.executable, "-m", "quart_rooms.cli"]
postgres_only = pytest.mark.parametrize("backend", ["postgres"])


# Skips ------------------------------------------------------------------------

def redis_url_or_skip() -> str:
    """The shared test Redis, or a skip naming the variable."""
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"multi-node tests need {REDIS_ENV} (e.g. redis://127.0.0.1:6379/15)")
    return url


def redis_server_or_skip() -> str:
    """The redis-server binary (broker fault tests run their own), or a skip."""
    found = shutil.which("redis-server")
    if found is None:
        pytest.skip("redis-server is not installed (broker fault tests start and stop their own)")
    return found


def node_or_skip() -> str:
    """The node binary with socket.io-client installed in tests/js, or a skip."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (the JavaScript client tests need it)")
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        pytest.skip("socket.io-client is not installed: run `npm ci` in tests/js")
    return node


# What members saw ---------------------------------------------------------------

def order_report(ids: Sequence[int], expected: Iterable[int]) -> dict[str, int]:
    """How a member's received ids differ from the expected ones: out of order, missing, duplicated."""
    want = list(expected)
    counts = Counter(ids)
    return {
        "out_of_order": sum(1 for x, y in pairwise(ids) if y <= x),
        "missing": len(set(want) - set(ids)),
        "duplicated": sum(n - 1 for n in counts.values() if n > 1),
        "unexpected": len(set(ids) - set(want)),
    }


CLEAN = {"out_of_order": 0, "missing": 0, "duplicated": 0, "unexpected": 0}


def ids_of(messages: Iterable[dict[str, Any]]) -> list[int]:
    """The ids of message objects, in the order given."""
    return [m["id"] for m in messages]


# Nodes in this process ------------------------------------------------------------

@asynccontextmanager
async def two_nodes(
    database_url: str, tmp_path: Path, redis_url: str, **overrides: Any
) -> AsyncIterator[tuple[Server, Server]]:
    """Nodes A and B served in this process: one database, one Redis, a channel of their own."""
    shared = {
        "redis_url": redis_url,
        "redis_channel": f"test-{uuid.uuid4().hex}",
        "jwt_secret": secrets.token_urlsafe(32),
        **overrides,
    }
    settings_a = make_settings(database_url, tmp_path / "a", **dict(shared))
    settings_b = make_settings(database_url, tmp_path / "b", **dict(shared))
    async with running(settings_a) as a, running(settings_b) as b:
        await add_admin(a)
        yield a, b


async def admin_of(server: Server) -> Api:
    """An Api signed in as the test admin (close it with `await api.__aexit__()` or use it as a context)."""
    api = Api(server)
    await api.login("admin", server.admin_password)
    return api


async def make_users(admin: Api, names: Iterable[str]) -> dict[str, str]:
    """Create the accounts (two at a time: hashing takes a core each) and sign each in: {name: token}."""
    names = list(names)
    gate = asyncio.Semaphore(2)

    async def one(name: str) -> str:
        async with gate:
            await admin.create_user(name)
            return await admin.token_for(name)

    return dict(zip(names, await asyncio.gather(*(one(n) for n in names)), strict=True))


async def connected(url: str, token: str) -> Chatter:
    """A python-socketio client connected with `token`."""
    chatter = Chatter(url)
    await chatter.connect(token)
    return chatter


async def joined(url: str, token: str, room: str, **join: Any) -> tuple[Chatter, dict[str, Any]]:
    """A client connected and in `room`: (client, join ack)."""
    chatter = await connected(url, token)
    ack = await chatter.call("join", {"room": room, **join})
    assert ack["ok"], ack
    return chatter, ack


async def close_all(chatters: Iterable[Chatter]) -> None:
    """Disconnect every client, ignoring the ones already gone."""
    await asyncio.gather(*(c.close() for c in chatters), return_exceptions=True)


async def send_many(
    chatter: Chatter, room: str, count: int, *, inflight: int = 8, tag: str = "", on_ack: Any = None
) -> list[dict[str, Any]]:
    """`count` messages from one socket with at most `inflight` unacknowledged; the acks in send order.

    Message n (in the order the messages went out) has text f"{tag}{n}".
    """
    acks: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(inflight)

    async def one() -> None:
        async with gate:
            n = len(acks)
            acks.append({})
            acks[n] = await chatter.sio.call("message", {"room": room, "msg": f"{tag}{n}"}, timeout=30)
            if on_ack is not None:
                on_ack(acks[n])

    await asyncio.gather(*(one() for _ in range(count)))
    return acks


async def wait_until(condition: Any, timeout: float, what: str, step: float = 0.02) -> float:
    """Poll `condition()` until true; the seconds it took. Fails the test after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(step)
    return time.monotonic() - started


# A private redis-server --------------------------------------------------------------

class RedisServer:
    """A redis-server of the test's own on a free port: stopped, hung and started by its PID."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again) on the same port and wait until it answers PING."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self.pong():
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING")

    def pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill_subscribers(self) -> int:
        """CLIENT KILL TYPE pubsub: drop every subscriber connection; how many there were."""
        with redis.Redis(port=self.port, socket_timeout=5) as client:
            return int(client.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))

    def subscribers(self) -> int:
        """How many connections are subscribed to a channel."""
        with redis.Redis(port=self.port, socket_timeout=5) as client:
            return sum(1 for c in client.client_list(_type="pubsub") if c.get("sub") == "1")

    def stop(self) -> None:
        """SIGTERM, and wait until it is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)  # a hung server must wake up to hear SIGTERM
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def hang(self) -> None:
        """SIGSTOP: connections stay open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


# Nodes as real processes ----------------------------------------------------------------

def cli_env(database_url: str, redis_url: str, channel: str, secret: str, **more: str) -> dict[str, str]:
    """The environment of a `quart-rooms` command of the test cluster (no outside QUART_ROOMS_ variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
    env |= {
        "QUART_ROOMS_DATABASE_URL": database_url,
        "QUART_ROOMS_REDIS_URL": redis_url,
        "QUART_ROOMS_REDIS_CHANNEL": channel,
        "QUART_ROOMS_JWT_SECRET": secret,
        "QUART_ROOMS_LOG_LEVEL": "WARNING",
    }
    env |= {f"QUART_ROOMS_{k.upper()}": v for k, v in more.items()}
    return env


async def create_admin(database_url: str, folder: Path) -> None:
    """The schema and the test admin, made in this process as `create-user --admin` would (no 2 s of imports)."""
    from quart_rooms.services import Services
    from quart_rooms.storage.db import migrate

    services = Services.build(make_settings(database_url, folder))
    try:
        await migrate(services.db.write_engine)
        await services.admin.create_user("test", "admin", ADMIN_PASSWORD, is_admin=True)
    finally:
        services.passwords.close()
        await services.db.dispose()


class NodeProcess:
    """`quart-rooms serve` as a real process (its output in a log file)."""

    def __init__(self, env: dict[str, str], folder: Path, *, workers: int = 1) -> None:
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.env = env | {"QUART_ROOMS_INSTANCE_PATH": str(folder / "instance")}
        self.workers = workers
        self.log = folder / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = CLI + ["serve", "--port", str(self.port)]
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        with self.log.open("ab") as out:  # a session of its own: the supervisor and its workers are one group
            self.process = subprocess.Popen(args, cwd=self.folder, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    async def ready(self, timeout: float = 30) -> None:
        """Wait until /readyz answers 200 (storage and broker up)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.output()}")
                try:
                    if (await client.get(self.url + "/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"serve did not become ready:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def kill9(self) -> None:
        """SIGKILL to the node: `serve` runs Hypercorn's supervisor and its worker(s), so the whole group."""
        assert self.process is not None
        self._kill_group()
        self.process.wait(10)

    def _kill_group(self) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group id is the supervisor's pid (start_new_session)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """SIGINT and wait up to 20 s; then SIGKILL to whatever is left of its process group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()  # also a worker left behind
        self.process.wait(5)

    def server(self) -> Server:
        """A Server for tests.helpers.Api (it only needs the URL)."""
        return Server(url=self.url, services=None, admin_password=ADMIN_PASSWORD)  # type: ignore[arg-type]


# The official JavaScript client -------------------------------------------------------------

async def run_js_clients(config: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Run tests/js/cluster.mjs with `config`; its JSON result (fails the test if the script fails)."""
    node = node_or_skip()
    process = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "cluster.mjs"), json.dumps(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert process.returncode == 0 and lines, (process.returncode, out.decode()[-2000:], err.decode()[-2000:])
    result: dict[str, Any] = json.loads(lines[-1])
    return result
