#!/usr/bin/env python3
"""pingbot: a small quart-rooms client that answers "ping" with "pong".

It signs in over HTTP (httpx), connects with python-socketio, joins its rooms
and answers every message that mentions it (`@pingbot ping` -> `@alice pong
(#41)`). It is also a worked example of every recipe in docs/api.md:

- token renewal: it refreshes its access token over HTTP before it runs out
  and hands the new one to its live socket with the `refresh` event;
- reconnecting: when the connection drops (or the server ends it) it connects
  again and rejoins each room with `since_id` (the last id it saw) and
  `epoch`; with `more: true` it reads the rest over HTTP (`after_id`); with
  `reset: true` it forgets the room; it handles each message id once;
- sending exactly once: each reply has a `client_id` made from the message it
  answers, and a reply whose ack does not come is sent again with the same
  `client_id`, after a reconnect if need be: the server stores it once.

Run it (Python 3.11+) against a server that has an account for it:

    pip install "python-socketio[asyncio-client]" httpx
    quart-rooms create-user pingbot            # as an operator; then grant it a room, or use a public one
    QUART_ROOMS_BOT_PASSWORD=... python examples/bot.py --url http://127.0.0.1:5000 --room lobby

Then write `@pingbot ping` in the room. Ctrl-C stops it. `--help` lists the options.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import socketio

log = logging.getLogger("pingbot")
Json = dict[str, Any]


class SignInFailed(Exception):
    """The server refused the bot's username and password: nothing to retry."""


@dataclass
class Config:
    url: str
    username: str
    password: str
    rooms: list[str]
    ack_timeout: float = 10.0  # seconds to wait for an acknowledgement before sending again
    reconnect_delay: float = 1.0  # first wait before reconnecting; doubles up to max_reconnect_delay
    max_reconnect_delay: float = 30.0


# HTTP: sign-in, token renewal, history pages --------------------------------------------


class Session:
    """The bot's tokens and its HTTP client. Refreshes run one at a time: a refresh token works once."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.http = httpx.AsyncClient(base_url=config.url, timeout=15)
        self.access_token = ""
        self.refresh_token = ""
        self.expires_at = 0.0  # time.monotonic() when the access token runs out
        self.lifetime = 0.0  # seconds the last access token was issued for
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self.http.aclose()

    def _keep(self, reply: httpx.Response) -> None:
        body = reply.json()
        self.access_token, self.refresh_token = body["access_token"], body["refresh_token"]
        self.lifetime = float(body["expires_in"])
        self.expires_at = time.monotonic() + self.lifetime

    async def sign_in(self) -> None:
        """POST /api/auth/login; waits out a 429 (Retry-After); SignInFailed on wrong credentials."""
        async with self._lock:
            while True:
                reply = await self.http.post(
                    "/api/auth/login", json={"username": self.config.username, "password": self.config.password}
                )
                if reply.status_code == 429:
                    await asyncio.sleep(float(reply.headers.get("Retry-After", "1")))
                    continue
                if reply.status_code == 401:
                    raise SignInFailed(reply.json()["error"]["message"])
                reply.raise_for_status()
                self._keep(reply)
                log.info("signed in as %s; the access token lives %.0f s", self.config.username, self.lifetime)
                return

    async def refresh(self) -> None:
        """POST /api/auth/refresh with the refresh token (rotating it); signs in again if it is refused."""
        async with self._lock:
            spent = self.refresh_token
            reply = await self.http.post("/api/auth/refresh", json={"refresh_token": spent})
            if reply.status_code == 200:
                self._keep(reply)
                log.info("renewed the access token (%.0f s)", self.lifetime)
                return
        log.warning("the refresh token was refused (%s); signing in again", reply.status_code)
        await self.sign_in()

    def renew_in(self) -> float:
        """Seconds until the token should be renewed: a quarter of its life (at most a minute) before its end."""
        margin = min(60.0, self.lifetime / 4)
        return max(0.0, self.expires_at - margin - time.monotonic())

    async def fresh_token(self) -> str:
        """An access token with some life left, for a new connection."""
        if self.renew_in() <= 0:
            await self.refresh()
        return self.access_token

    async def messages_after(self, room: str, after_id: int) -> list[Json]:
        """GET /api/rooms/{room}/messages?after_id=: the next page, oldest first (renews the token on 401)."""
        for _ in range(2):
            reply = await self.http.get(
                f"/api/rooms/{room}/messages", params={"after_id": after_id, "limit": 200},
                headers={"Authorization": f"Bearer {self.access_token}"},
            )
            if reply.status_code == 401:
                await self.refresh()
                continue
            reply.raise_for_status()
            messages: list[Json] = reply.json()["messages"]
            return messages
        raise RuntimeError(f"reading {room} after {after_id} kept answering 401")


# Rooms: what the bot has seen ------------------------------------------------------------


@dataclass
class RoomState:
    """One room as the bot knows it: the epoch of its last join and the ids it has handled."""

    epoch: str | None = None
    last_id: int = 0  # the highest message id handled: the since_id of the next join
    seen: set[int] = field(default_factory=set)

    def first_time(self, message_id: int) -> bool:
        """True the first time an id comes (in a join history, an HTTP page or live), False after."""
        if message_id in self.seen:
            return False
        self.seen.add(message_id)
        self.last_id = max(self.last_id, message_id)
        if len(self.seen) > 10_000:  # forget old ids; anything that old was handled long ago
            floor = self.last_id - 5_000
            self.seen = {seen for seen in self.seen if seen > floor}
        return True

    def reset(self, epoch: str) -> None:
        self.epoch, self.last_id, self.seen = epoch, 0, set()


# The bot ----------------------------------------------------------------------------------


class Bot:
    """Connects, keeps its rooms joined across reconnects, answers mentions, renews its token."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.session = Session(config)
        self.rooms: dict[str, RoomState] = {name.lower(): RoomState() for name in config.rooms}
        self.names: dict[str, str] = {name.lower(): name for name in config.rooms}  # as the server spells them
        self.sio: socketio.AsyncClient | None = None
        self.ready = asyncio.Event()  # connected and every room joined: replies may go out
        self.mention = re.compile(rf"@{re.escape(config.username)}\b", re.IGNORECASE)
        self._ended: str | None = None  # the reason of the last session_expired
        self._closed = asyncio.Event()  # the current connection has ended
        self._tasks: set[asyncio.Task[None]] = set()

    # The connection loop ------------------------------------------------------------

    async def run(self) -> None:
        """Sign in, then connect again and again until stopped; only a refused sign-in ends it."""
        http_session = aiohttp.ClientSession()  # shared by every Socket.IO connection
        renewer = asyncio.create_task(self._renew_forever())
        delay = self.config.reconnect_delay
        try:
            while True:
                try:
                    if not self.session.access_token:
                        await self.session.sign_in()
                    if await self._connect_once(http_session):
                        delay = self.config.reconnect_delay  # it worked for a while: start the backoff over
                        if not await self._after_disconnect():
                            return
                except httpx.HTTPError as exc:
                    log.warning("the server does not answer (%s)", exc)
                wait = delay * random.uniform(0.8, 1.2)
                log.info("connecting again in %.1f s", wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.config.max_reconnect_delay)
        finally:
            renewer.cancel()
            for task in list(self._tasks):
                task.cancel()
            if self.sio is not None and self.sio.connected:
                await self.sio.disconnect()
            await http_session.close()
            await self.session.close()

    async def _connect_once(self, http_session: aiohttp.ClientSession) -> bool:
        """Connect, rejoin every room and stay until the connection ends; False if it never came up."""
        sio = socketio.AsyncClient(reconnection=False, http_session=http_session)
        refusal: Json = {}
        self._register(sio, refusal)
        self._ended = None
        self._closed.clear()
        try:
            await sio.connect(self.config.url, auth={"token": await self.session.fresh_token()},
                              transports=["websocket"], wait_timeout=10)
        except (socketio.exceptions.ConnectionError, httpx.HTTPError) as exc:
            code = refusal.get("data", {}).get("code") if isinstance(refusal.get("data"), dict) else None
            log.warning("could not connect: %s", code or exc)
            if code == "token_expired":
                await self.session.refresh()
            elif code == "unauthorized":
                await self.session.sign_in()
            return False
        self.sio = sio
        log.info("connected")
        try:
            await self._join_all(sio)
            self.ready.set()
        except (socketio.exceptions.SocketIOError, httpx.HTTPError) as exc:
            log.warning("rejoining the rooms failed (%s); reconnecting", exc)
            await sio.disconnect()
        await self._closed.wait()
        self.ready.clear()
        return True

    def _register(self, sio: socketio.AsyncClient, refusal: Json) -> None:
        async def connect_error(data: Any) -> None:
            refusal.update(data if isinstance(data, dict) else {"message": data})

        async def disconnect(*reason: Any) -> None:
            log.info("disconnected (%s)", reason[0] if reason else "")
            self.ready.clear()
            self._closed.set()

        async def welcome(data: Json) -> None:
            log.info("welcome: token for %s s, limits %s", data.get("expires_in"), data.get("limits"))

        async def session_expired(data: Json) -> None:
            self._ended = str(data.get("reason"))
            log.info("the server ends the session: %s", self._ended)

        async def kicked(data: Json) -> None:
            log.warning("kicked from %s (%s)", data.get("room"), data.get("reason"))

        async def access(data: Json) -> None:
            log.info("role in %s is now %s", data.get("room"), data.get("role"))
            room = str(data.get("room", "")).lower()
            if data.get("role") and room in self.rooms and sio.connected and self.sio is sio:
                self._spawn(self._join(sio, room))  # access came back: enter again

        async def message(data: Json) -> None:
            self._handle(data)

        for name, handler in [("connect_error", connect_error), ("disconnect", disconnect), ("welcome", welcome),
                              ("session_expired", session_expired), ("kicked", kicked), ("access", access),
                              ("message", message)]:
            sio.on(name, handler)

    async def _after_disconnect(self) -> bool:
        """Get ready to connect again, as the reason the server gave asks; False to stop."""
        reason, self._ended = self._ended, None
        if reason == "account_deleted":
            log.error("the account was deleted; stopping")
            return False
        if reason in ("signed_out", "account_changed"):
            await self.session.sign_in()  # SignInFailed when the password changed or the account is disabled
        elif reason == "token_expired":
            await self.session.refresh()
        return True

    # Rooms ---------------------------------------------------------------------------

    async def _join_all(self, sio: socketio.AsyncClient) -> None:
        for room in self.rooms:
            await self._join(sio, room)

    async def _join(self, sio: socketio.AsyncClient, room: str) -> None:
        """Join (or rejoin with since_id and epoch), then handle what was missed, each id once."""
        state = self.rooms[room]
        payload: Json = {"room": self.names[room]}
        recovering = state.epoch is not None
        if recovering:
            payload.update(since_id=state.last_id, epoch=state.epoch)
        ack = await sio.call("join", payload, timeout=self.config.ack_timeout)
        if not ack.get("ok"):
            log.warning("could not join %s: %s", payload["room"], ack.get("error"))
            return
        self.names[room] = ack["room"]
        if not recovering or ack.get("reset"):
            # First join, or the room was made again: take the history as read, answer what comes next.
            if ack.get("reset"):
                log.info("%s was deleted and made again: forgetting what the bot knew of it", ack["room"])
            state.reset(ack["epoch"])
            for item in ack["history"]:
                state.first_time(item["id"])
            log.info("joined %s (%s), %d messages of history", ack["room"], ack["role"], len(ack["history"]))
            return
        log.info("rejoined %s: %d missed messages%s", ack["room"], len(ack["history"]),
                 ", more over HTTP" if ack.get("more") else "")
        for item in ack["history"]:
            self._handle(item)
        if ack.get("more"):
            after = ack["history"][-1]["id"] if ack["history"] else state.last_id
            while page := await self.session.messages_after(ack["room"], after):
                for item in page:
                    self._handle(item)
                after = page[-1]["id"]

    # Messages ------------------------------------------------------------------------

    def _handle(self, item: Json) -> None:
        """A message from any source: answer it once if it mentions the bot."""
        state = self.rooms.get(str(item.get("room", "")).lower())
        if state is None or not state.first_time(int(item["id"])):
            return
        author, text = str(item["user"]), item.get("msg")
        if item.get("deleted") or not isinstance(text, str) or author.lower() == self.config.username.lower():
            return
        if not self.mention.search(text):
            return
        answer = "pong" if re.search(r"\bping\b", text, re.IGNORECASE) else "say ping and I say pong"
        # The client_id names the message answered: however often this runs, one reply is stored.
        client_id = f"re:{state.epoch}:{item['id']}"
        self._spawn(self.send(item["room"], f"@{author} {answer} (#{item['id']})", client_id))

    async def send(self, room: str, text: str, client_id: str) -> int | None:
        """Post a message; when no ack comes, send it again with the same client_id. The message id, or None."""
        payload = {"room": room, "msg": text, "client_id": client_id}
        for attempt in range(1, 11):
            await self.ready.wait()  # connected and rejoined (after a reconnect)
            sio = self.sio
            assert sio is not None
            try:
                ack = await sio.call("message", payload, timeout=self.config.ack_timeout)
            except socketio.exceptions.TimeoutError:
                log.warning("no ack for %s (attempt %d); sending it again", client_id, attempt)
                continue
            except socketio.exceptions.SocketIOError as exc:  # the connection dropped meanwhile
                log.info("sending %s failed (%s); again after the reconnect", client_id, exc)
                self.ready.clear()
                continue
            if ack.get("ok"):
                log.info("sent %s as #%s", client_id, ack["id"])
                return int(ack["id"])
            error = ack.get("error")
            if error == "rate_limited":
                await asyncio.sleep(float(ack.get("retry_after", 1)))
            elif error in ("unavailable", "not_in_room"):  # nothing stored; the server stops, or a rejoin is due
                await asyncio.sleep(self.config.reconnect_delay)
            else:
                log.warning("the server refused %s: %s (%s)", client_id, error, ack.get("message"))
                return None
        log.error("gave up sending %s", client_id)
        return None

    # Token renewal -------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        """Before the access token runs out: a new one over HTTP, then `refresh` on the live socket."""
        while True:
            await asyncio.sleep(max(1.0, self.session.renew_in()) if self.session.lifetime else 1.0)
            if not self.session.lifetime or self.session.renew_in() > 0:
                continue
            try:
                await self.session.refresh()
                sio = self.sio
                if sio is not None and sio.connected:
                    ack = await sio.call("refresh", {"token": self.session.access_token},
                                         timeout=self.config.ack_timeout)
                    if ack.get("ok"):
                        log.info("the connection's token now runs %s s", ack["expires_in"])
                    else:
                        log.warning("refresh refused: %s", ack.get("error"))
            except (httpx.HTTPError, socketio.exceptions.SocketIOError) as exc:
                log.warning("renewing the token failed (%s); trying again shortly", exc)
            except SignInFailed as exc:
                log.error("cannot sign in any more: %s", exc)

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description="A quart-rooms bot that answers ping with pong.")
    parser.add_argument("--url", default=os.environ.get("QUART_ROOMS_URL", "http://127.0.0.1:5000"),
                        help="the server (default: $QUART_ROOMS_URL or http://127.0.0.1:5000)")
    parser.add_argument("--username", default=os.environ.get("QUART_ROOMS_BOT_USERNAME", "pingbot"))
    parser.add_argument("--room", action="append", dest="rooms", help="a room to join (repeat for more)")
    parser.add_argument("--ack-timeout", type=float, default=10.0, help="seconds to wait for an ack")
    parser.add_argument("--reconnect-delay", type=float, default=1.0, help="first wait before reconnecting")
    args = parser.parse_args(argv)
    password = os.environ.get("QUART_ROOMS_BOT_PASSWORD")
    if not password:
        parser.error("set QUART_ROOMS_BOT_PASSWORD to the bot's password")
    return Config(url=args.url.rstrip("/"), username=args.username, password=password,
                  rooms=args.rooms or ["lobby"], ack_timeout=args.ack_timeout, reconnect_delay=args.reconnect_delay)


async def main(argv: list[str] | None = None) -> int:
    bot = Bot(parse_args(argv))
    runner = asyncio.create_task(bot.run())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, runner.cancel)
    try:
        await runner
    except asyncio.CancelledError:
        log.info("stopped")
    except SignInFailed as exc:
        log.error("sign-in refused: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.exit(asyncio.run(main()))
