"""examples/bot.py against a live server: it answers, survives disconnects and restarts, renews its token.

The bot runs as a subprocess, as a user would run it; the server runs in the
test's event loop (conftest's `running`), so the test can disconnect the bot's
socket from the server side, and stop and start the server on the same port
with the same database and JWT secret. Short access tokens (5 s) make the bot
renew them during the test, and `max_recovery = 2` makes its recoveries need
the HTTP pages (`more: true`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import socketio

from quart_rooms.realtime.sessions import Socket
from tests.conftest import add_admin, free_port, make_settings, running
from tests.helpers import Api, Chatter, Server, cheap_passwords  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[1]
BOT = REPO / "examples" / "bot.py"
BOT_NAME = "pingbot"
BOT_PASSWORD = "pingbot-password"
TOKEN_TTL = 5
pytestmark = pytest.mark.usefixtures("cheap_passwords")


def load_bot_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_bot", BOT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_bot"] = module
    spec.loader.exec_module(module)
    return module


async def wait_until(condition: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            shown = f"\n--- bot log ---\n{log.read_text()}" if log else ""
            raise AssertionError(f"timed out waiting for {what}{shown}")
        await asyncio.sleep(0.05)


def bot_sockets(server: Server) -> list[Socket]:
    """The bot's live sockets on this server."""
    return [s for s in server.app.realtime.hub.sockets.all() if s.user.username == BOT_NAME and not s.closed]


def bot_in_lobby(server: Server) -> bool:
    return any(s.room("lobby") for s in bot_sockets(server))


@asynccontextmanager
async def bot_process(url: str, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """examples/bot.py in a subprocess; SIGTERM at the end (it must exit cleanly)."""
    env = dict(os.environ, QUART_ROOMS_BOT_PASSWORD=BOT_PASSWORD)
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(BOT), "--url", url, "--username", BOT_NAME, "--room", "lobby",
            "--reconnect-delay", "1.5", "--ack-timeout", "5", env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()


class Alice:
    """A person in the lobby: a fresh sign-in per use (tokens live only TOKEN_TTL seconds here)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.chatter: Chatter | None = None

    async def __aenter__(self) -> Alice:
        async with Api(self.server) as api:
            token = await api.token_for("alice")
        self.chatter = Chatter(self.server.url)
        await self.chatter.connect(token)
        assert (await self.chatter.call("join", {"room": "lobby"}))["ok"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.chatter is not None
        await self.chatter.close()

    async def say(self, text: str) -> int:
        assert self.chatter is not None
        ack = await self.chatter.call("message", {"room": "lobby", "msg": text})
        assert ack["ok"], ack
        return int(ack["id"])

    def replies(self) -> dict[int, list[str]]:
        """The bot's replies seen live, by the id of the message they answer."""
        assert self.chatter is not None
        found: dict[int, list[str]] = {}
        for message in self.chatter.events["message"]:
            match = re.search(r"\(#(\d+)\)$", message["msg"])
            if message["user"] == BOT_NAME and match:
                found.setdefault(int(match[1]), []).append(message["msg"])
        return found

    async def answered(self, ids: list[int], log: Path) -> None:
        await wait_until(lambda: all(i in self.replies() for i in ids), 20, f"the bot's answers to {ids}", log)


async def replies_in_history(api: Api) -> tuple[list[int], dict[int, int]]:
    """(ids of pings, {ping id: number of bot replies}) from the room's whole stored history."""
    reply = await api.get("/api/rooms/lobby/messages", params={"after_id": 0, "limit": 200})
    messages = reply.json()["messages"]
    pings = [m["id"] for m in messages if m["user"] == "alice" and "@pingbot" in m["msg"]]
    counts: dict[int, int] = {}
    for message in messages:
        match = re.search(r"\(#(\d+)\)$", message.get("msg", ""))
        if message["user"] == BOT_NAME and match:
            counts[int(match[1])] = counts.get(int(match[1]), 0) + 1
    return pings, counts


async def test_bot_answers_recovers_renews_and_survives_a_restart(database_url: str, tmp_path: Path) -> None:
    """Ping -> pong; token renewal on a live socket; recovery (with an HTTP page) after a server-side
    disconnect; a server restart on the same port; every ping answered exactly once."""
    settings = make_settings(database_url, tmp_path / "instance", access_token_ttl=TOKEN_TTL, max_recovery=2)
    port = free_port()
    log = tmp_path / "bot.log"
    async with running(settings, port=port) as server:
        await add_admin(server)
        async with Api(server) as admin:
            await admin.login("admin", server.admin_password)
            await admin.create_user(BOT_NAME, BOT_PASSWORD)
            await admin.create_user("alice")
            await admin.create_room("lobby", public=True)

    async with AsyncExitStack() as stack:
        first = AsyncExitStack()
        server = await first.enter_async_context(running(settings, port=port))
        bot = await stack.enter_async_context(bot_process(server.url, log))
        stack.push_async_callback(first.aclose)

        # It signs in, joins and answers.
        await wait_until(lambda: bot_in_lobby(server), 15, "the bot in the lobby", log)
        connected_at = time.monotonic()
        (socket,) = bot_sockets(server)
        async with Alice(server) as alice:
            ping = await alice.say("@pingbot ping")
            await alice.answered([ping], log)
            assert alice.replies()[ping] == [f"@alice pong (#{ping})"]

        # Its socket outlives several access tokens: it renews them over HTTP and with `refresh`.
        await asyncio.sleep(max(0.0, connected_at + 2 * TOKEN_TTL + 1 - time.monotonic()))
        assert [s.sid for s in bot_sockets(server)] == [socket.sid], log.read_text()
        assert "the connection's token now runs" in log.read_text()

        # The server drops its socket; what is said meanwhile is recovered: 2 messages in the
        # join (max_recovery), the third over HTTP (more: true), each answered once.
        async with Alice(server) as alice:
            await server.app.realtime.sio.disconnect(socket.sid)
            missed = [await alice.say(f"@pingbot ping {n}") for n in range(3)]
            assert not bot_sockets(server), "the bot was back before the messages were sent"
            await alice.answered(missed, log)
            assert all(len(alice.replies()[i]) == 1 for i in missed)
        assert "rejoined lobby: 2 missed messages, more over HTTP" in log.read_text(), log.read_text()

        # The server stops (closing every socket) and starts again on the same port.
        await first.aclose()
        async with running(settings, port=port) as server:
            async with Alice(server) as alice:
                again = await alice.say("@pingbot ping after the restart")
                await alice.answered([again], log)
            await wait_until(lambda: bot_in_lobby(server), 15, "the bot back in the lobby", log)
            async with Api(server) as admin:
                await admin.login("admin", server.admin_password)
                pings, counts = await replies_in_history(admin)
            assert pings == [ping, *missed, again]
            assert counts == {i: 1 for i in pings}, log.read_text()  # every ping answered, none twice
            assert bot.returncode is None
    assert bot.returncode == 0, log.read_text()  # SIGTERM stops it cleanly


async def test_a_reply_without_ack_is_sent_again_with_the_same_client_id(server: Server, admin_api: Api) -> None:
    """Bot.send: the first ack is lost (the message was stored); the retry carries the same client_id,
    the server answers with the first id, and the room holds the message once."""
    module = load_bot_module()
    await admin_api.create_user(BOT_NAME, BOT_PASSWORD)
    await admin_api.create_room("lobby", public=True)
    token = await admin_api.token_for(BOT_NAME, BOT_PASSWORD)
    real = Chatter(server.url)
    await real.connect(token)
    sent: list[dict[str, Any]] = []

    class LosesTheFirstAck:
        """The bot's socket, except that the first ack never arrives (the message still reaches the server)."""

        connected = True

        async def call(self, event: str, data: dict[str, Any], timeout: float) -> Any:
            sent.append(data)
            ack = await real.call(event, data)
            if len(sent) == 1:
                raise socketio.exceptions.TimeoutError()
            return ack

    config = module.Config(url=server.url, username=BOT_NAME, password=BOT_PASSWORD, rooms=["lobby"], ack_timeout=1)
    bot = module.Bot(config)
    try:
        assert (await real.call("join", {"room": "lobby"}))["ok"]
        bot.sio = LosesTheFirstAck()
        bot.ready.set()
        first_id = await bot.send("lobby", "hello once", "re:test:1")
        assert [item["client_id"] for item in sent] == ["re:test:1", "re:test:1"]
        history = (await admin_api.get("/api/rooms/lobby/messages")).json()["messages"]
        assert [(m["id"], m["msg"]) for m in history] == [(first_id, "hello once")]
    finally:
        await bot.session.close()
        await real.close()


def test_bot_is_typed() -> None:
    """examples/bot.py passes mypy --strict."""
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", str(BOT)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_bot_needs_its_password() -> None:
    """Without QUART_ROOMS_BOT_PASSWORD it says so and exits 2, before touching the network."""
    env = {key: value for key, value in os.environ.items() if key != "QUART_ROOMS_BOT_PASSWORD"}
    done = subprocess.run([sys.executable, str(BOT), "--url", "http://127.0.0.1:9"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "QUART_ROOMS_BOT_PASSWORD" in done.stderr
