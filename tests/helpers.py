"""Test helpers: an HTTP client that signs in, and a Socket.IO client that records events."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
import socketio

from quart_rooms.services import Services


@dataclass
class Server:
    """A running test server."""

    url: str
    services: Services
    admin_password: str
    app: Any = None  # the ASGI app (its `realtime` holds the live side)


class Api:
    """An HTTP client of the server; `login` keeps the tokens for later calls."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.url, timeout=10)
        self.token: str | None = None
        self.refresh_token: str | None = None

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request with this client's access token."""
        headers = self._headers() | kwargs.pop("headers", {})
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    async def login(self, username: str, password: str) -> dict[str, Any]:
        """Sign in; fails the test unless it works."""
        reply = await self.http.post("/api/auth/login", json={"username": username, "password": password})
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        self.token, self.refresh_token = body["access_token"], body["refresh_token"]
        return body

    async def create_user(self, username: str, password: str = "password-123", *, is_admin: bool = False) -> None:
        """As admin: make an account."""
        reply = await self.post("/api/admin/users", json={"username": username, "password": password, "is_admin": is_admin})
        assert reply.status_code == 201, reply.text

    async def create_room(self, name: str, *, public: bool = False, title: str | None = None) -> None:
        """As admin: make a room."""
        reply = await self.post("/api/admin/rooms", json={"name": name, "public": public, "title": title})
        assert reply.status_code == 201, reply.text

    async def grant(self, room: str, username: str, role: str = "write") -> None:
        """As admin: give a user a role in a room."""
        reply = await self.put(f"/api/admin/rooms/{room}/grants/{username}", json={"role": role})
        assert reply.status_code == 200, reply.text

    async def revoke(self, room: str, username: str) -> None:
        """As admin: take a grant away."""
        reply = await self.delete(f"/api/admin/rooms/{room}/grants/{username}")
        assert reply.status_code == 204, reply.text

    async def token_for(self, username: str, password: str = "password-123") -> str:
        """An access token of another account (this client stays as it was)."""
        reply = await self.http.post("/api/auth/login", json={"username": username, "password": password})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["access_token"])


async def refusal(url: str, token: str | None, **kwargs: Any) -> str | None:
    """Connect expecting the server to refuse; the `code` it gave (None if it gave none)."""
    chatter = Chatter(url)
    try:
        await chatter.connect(token, **kwargs)
    except socketio.exceptions.ConnectionError:
        return chatter.refusal_code or "refused"
    finally:
        await chatter.close()
    raise AssertionError("the server accepted a connection it should have refused")


class Chatter:
    """A real python-socketio client that records every server event it gets."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, list[Any]] = defaultdict(list)
        self._arrived = asyncio.Event()
        self.sio.on("*", self._record)
        self.connect_error: Any = None

        @self.sio.event
        async def connect_error(data: Any) -> None:
            self.connect_error = data

    async def _record(self, event: str, data: Any = None) -> None:
        self.events[event].append(data)
        self._arrived.set()

    async def connect(self, token: str | None, *, headers: dict[str, str] | None = None) -> None:
        """Connect with the token in `auth`; raises socketio.exceptions.ConnectionError when refused."""
        auth = {"token": token} if token is not None else None
        await self.sio.connect(self.url, auth=auth, headers=headers or {}, transports=["websocket"], wait_timeout=5)

    async def call(self, event: str, data: Any) -> Any:
        """Emit an event and return its ack."""
        return await self.sio.call(event, data, timeout=10)

    async def wait_for(self, event: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """Wait until `count` events of this name arrived; returns them all."""
        async def arrived() -> None:
            while len(self.events[event]) < count:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(arrived(), timeout)
        return self.events[event]

    async def wait_disconnected(self, timeout: float = 2.0) -> None:
        """Wait until the server has closed this connection; fails the test if it does not."""
        for _ in range(int(timeout / 0.02)):
            if not self.sio.connected:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the server did not close the connection")

    async def settle(self, seconds: float = 0.3) -> None:
        """Give in-flight events time to arrive (to check that nothing more came)."""
        await asyncio.sleep(seconds)

    @property
    def refusal_code(self) -> str | None:
        """The `code` in the data of the connect_error the server sent (err.data.code in JavaScript)."""
        if not isinstance(self.connect_error, dict):
            return None
        return self.connect_error.get("data", {}).get("code")

    async def close(self) -> None:
        """Disconnect, and close the HTTP session a refused connect leaves open."""
        if self.sio.connected:
            await self.sio.disconnect()
        http = getattr(self.sio.eio, "http", None)
        if http is not None and not http.closed:
            await http.close()


# --- shared by the issue-8 test modules -------------------------------------------------

import pytest


@pytest.fixture
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its lowest cost, for tests that are not about hashing (the code path is the same)."""
    from argon2 import PasswordHasher, Type

    from quart_rooms.auth import passwords

    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID))


@pytest.fixture
async def chatters(server: Server) -> Any:
    """`await chatters(token)`: a connected Chatter on the test server, closed after the test."""
    opened: list[Chatter] = []

    async def _connect(token: str | None, **kwargs: Any) -> Chatter:
        chatter = Chatter(server.url)
        opened.append(chatter)
        await chatter.connect(token, **kwargs)
        return chatter

    yield _connect
    for chatter in opened:
        await chatter.close()
