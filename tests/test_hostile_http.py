"""Hostile clients at the HTTP and transport edge, as raw sockets see the server.

Clients that send what well-behaved libraries refuse to send: websocket
messages far over the packet limit, bodies over the limit (declared or
streamed), bodies that trickle in, Content-Length with Transfer-Encoding,
bodies that are not JSON. Each must get its answer at once, in the API's
error shape, and must not keep a socket or memory on the server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.helpers import Api, Server

BODY_TIMEOUT = 1  # seconds; the module's servers give a body this long to arrive
MiB = 1024 * 1024


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """A short body deadline, so the slow-body tests take about a second."""
    return {"body_timeout": BODY_TIMEOUT}


# --- raw clients -------------------------------------------------------------------------


@dataclass
class Reply:
    """What a raw client saw: the response, and whether the server closed the connection."""

    status: int
    headers: dict[str, list[str]]
    body: bytes
    closed: bool

    def json(self) -> Any:
        return json.loads(self.body)


class Raw:
    """A TCP client that sends exactly the bytes it is given (loop.sock_* calls, so that a
    reset after the response still leaves the response readable)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.port = int(sock.getsockname()[1])  # this end's port, for /proc/net/tcp

    @classmethod
    async def connect(cls, port: int) -> Raw:
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    async def send(self, data: bytes) -> bool:
        """Send `data`; False if the server has closed the connection already."""
        try:
            await self.loop.sock_sendall(self.sock, data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    async def read(self, timeout: float) -> tuple[bytes, bool]:
        """Everything the server sends within `timeout` seconds, and whether it closed."""
        data = b""
        deadline = time.monotonic() + timeout
        while True:
            try:
                chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), deadline - time.monotonic())
            except TimeoutError:
                return data, False
            except ConnectionResetError:
                return data, True
            if not chunk:
                return data, True
            data += chunk

    async def reply(self, timeout: float = 2.0) -> Reply:
        """The server's response, read until the server closes or `timeout` seconds pass."""
        data, closed = await self.read(timeout)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), data[:200]
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return Reply(int(lines[0].split()[1]), headers, body, closed)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def raw_clients() -> AsyncIterator[list[Raw]]:
    """Raw clients a test opens (append them); closed when the test ends."""
    clients: list[Raw] = []
    yield clients
    for client in clients:
        client.close()


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def http_request(method: str, target: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """A raw HTTP/1.1 request, headers exactly as given."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def polling_sid(server: Server) -> str:
    """Open an Engine.IO long-polling session (no sign-in needed for that) and return its sid."""
    async with httpx.AsyncClient() as http:
        reply = await http.get(server.url + "/socket.io/", params={"EIO": "4", "transport": "polling"})
    assert reply.text.startswith("0"), reply.text
    return str(json.loads(reply.text[1:])["sid"])


async def body_target(server: Server, route: str) -> tuple[str, int]:
    """The request target of a body route kind ("polling" or "api") and its body limit in bytes."""
    settings = server.services.settings
    if route == "polling":
        sid = await polling_sid(server)
        return f"/socket.io/?EIO=4&transport=polling&sid={sid}", settings.max_socket_packet_bytes
    return "/api/auth/login", settings.max_body_bytes


def assert_refused(reply: Reply, status: int, code: str) -> None:
    """An error in the API's shape, announced and done with `Connection: close`."""
    assert reply.status == status, reply
    assert reply.json()["error"]["code"] == code
    assert isinstance(reply.json()["error"]["message"], str)
    assert reply.headers.get("connection") == ["close"]
    assert reply.closed, "the server kept the connection open"


TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "07": "CLOSE", "09": "LAST_ACK", "0B": "CLOSING"}


def server_ends(server_port: int, client_ports: set[int]) -> list[str]:
    """TCP states of the server's ends of the connections from `client_ports` (/proc/net/tcp)."""
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if local == server_port and remote in client_ports:
            states.append(TCP_STATES.get(fields[3], fields[3]))
    return states


async def assert_sockets_released(server_port: int, client_ports: set[int], within: float = 1.0) -> None:
    """Within `within` seconds no server socket of these connections is open (ESTABLISHED or CLOSE_WAIT)."""
    held: list[str] = []
    for _ in range(int(within / 0.05)):
        held = [s for s in server_ends(server_port, client_ports) if s in ("ESTABLISHED", "CLOSE_WAIT")]
        if not held:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"server sockets still open: {held}")


# --- websocket messages -----------------------------------------------------------------


def ws_handshake(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return http_request("GET", "/socket.io/?EIO=4&transport=websocket", {
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13",
    })


def ws_frame_header(length: int, opcode: int = 0x1) -> bytes:
    """A final, masked client frame header (mask key zero: the payload goes as is)."""
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 65536:
        size = bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + length.to_bytes(8, "big")
    return bytes([0x80 | opcode]) + size + b"\0\0\0\0"


def ws_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each complete server frame in `data` (server frames are unmasked)."""
    frames = []
    while len(data) >= 2:
        opcode, length, at = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            length, at = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, at = int.from_bytes(data[2:10], "big"), 10
        if len(data) < at + length:
            break
        frames.append((opcode, data[at:at + length]))
        data = data[at + length:]
    return frames


async def open_websocket(port: int) -> Raw:
    """An accepted Engine.IO websocket that has not signed in."""
    client = await Raw.connect(port)
    await client.send(ws_handshake(port))
    head = b""
    while b"\r\n\r\n" not in head:
        head += await client.loop.sock_recv(client.sock, 1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return client


async def test_oversized_websocket_message_is_refused_before_it_is_buffered(
    server: Server, raw_clients: list[Raw]
) -> None:
    """A frame that announces 8 MiB is refused with close code 1009 and the connection dropped
    after the first 512 KiB, without waiting for (and storing) the rest."""
    client = await open_websocket(port_of(server))
    raw_clients.append(client)
    assert await client.send(ws_frame_header(8 * MiB) + b"4" + b"x" * (512 * 1024 - 1))
    data, closed = await client.read(timeout=2)
    frames = ws_frames(data)
    assert frames[0][0] == 0x1 and frames[0][1].startswith(b"0{")  # the Engine.IO open packet
    close = [payload for opcode, payload in frames if opcode == 0x8]
    assert close and int.from_bytes(close[0][:2], "big") == 1009, frames
    assert closed, "the server kept the connection open"


def _memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            figures[name] = int(value.split()[0]) / 1024
    return figures


def _worker_of(pid: int) -> int:
    """The Hypercorn worker process that `quart-rooms serve` (pid) spawned, or pid itself."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and b"spawn_main" in command:
            return int(entry.name)
    return pid


async def _send_big_frame(port: int, size: int) -> int:
    """Send one text frame of `size` bytes (until the server stops it); the bytes sent."""
    client = await open_websocket(port)
    sent = 0
    try:
        await client.send(ws_frame_header(size))
        chunk = b"x" * 65536
        while sent < size and await client.send(chunk):
            sent += len(chunk)
        await client.read(timeout=10)
    finally:
        client.close()
    return sent


async def test_unauthenticated_oversized_messages_do_not_grow_memory(tmp_path: Path) -> None:
    """`quart-rooms serve`: 12 websockets that never sign in each send one 8 MiB text frame;
    the worker's peak memory grows by far less than what they sent (96 MiB)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "quart_rooms.cli", "serve", "--port", str(port)], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 30  # a start takes about 2 s, far more on a busy machine
            while True:
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
                await asyncio.sleep(0.1)
        worker = _worker_of(process.pid)
        before = _memory(worker)
        started = time.monotonic()
        sent = await asyncio.gather(*(_send_big_frame(port, 8 * MiB) for _ in range(12)))
        after = _memory(worker)
        print(
            f"\n12 x 8 MiB websocket frames ({sum(sent) / MiB:.0f} MiB written before the server cut them off) "
            f"in {time.monotonic() - started:.2f} s: worker {worker} "
            f"VmRSS {before['VmRSS']:.1f} -> {after['VmRSS']:.1f} MiB, "
            f"VmHWM {before['VmHWM']:.1f} -> {after['VmHWM']:.1f} MiB "
            f"(+{after['VmHWM'] - before['VmHWM']:.1f} MiB)"
        )
        assert after["VmHWM"] - before["VmHWM"] < 40
    finally:
        process.terminate()
        process.wait(timeout=20)


# --- request bodies ---------------------------------------------------------------------


@pytest.mark.parametrize("route", ["polling", "api"])
async def test_body_over_the_limit_is_refused_and_its_socket_freed(
    server: Server, raw_clients: list[Raw], route: str
) -> None:
    """A declared length just over the limit gets 413 at once and the connection closes; 20 clients
    (each with its own Engine.IO session) that send such a body and leave without reading hold no
    server socket a second later (no CLOSE_WAIT)."""

    async def over_the_limit() -> bytes:
        target, limit = await body_target(server, route)
        body = b"4" + b"x" * limit
        return http_request("POST", target, {"Content-Type": "text/plain", "Content-Length": str(len(body))}, body)

    client = await Raw.connect(port_of(server))
    raw_clients.append(client)
    await client.send(await over_the_limit())
    assert_refused(await client.reply(), 413, "payload_too_large")

    leavers = []
    for _ in range(20):
        request = await over_the_limit()
        leaver = await Raw.connect(port_of(server))
        raw_clients.append(leaver)
        leavers.append(leaver.port)
        await leaver.send(request)
        leaver.close()
    await assert_sockets_released(port_of(server), {client.port, *leavers})


@pytest.mark.parametrize("route", ["polling", "api"])
async def test_huge_declared_length_is_answered_at_once(server: Server, raw_clients: list[Raw], route: str) -> None:
    """Content-Length: 100 MB, and no body: 413 right away, then the connection closes."""
    target, _ = await body_target(server, route)
    client = await Raw.connect(port_of(server))
    raw_clients.append(client)
    started = time.monotonic()
    await client.send(http_request("POST", target, {"Content-Type": "application/json", "Content-Length": "100000000"}))
    assert_refused(await client.reply(), 413, "payload_too_large")
    assert time.monotonic() - started < 1
    await assert_sockets_released(port_of(server), {client.port})


@pytest.mark.parametrize("route", ["polling", "api"])
async def test_chunked_body_is_cut_at_the_limit(server: Server, raw_clients: list[Raw], route: str) -> None:
    """A chunked body is counted as it arrives: 413 once it passes the limit, without waiting for its end."""
    target, limit = await body_target(server, route)
    client = await Raw.connect(port_of(server))
    raw_clients.append(client)
    await client.send(http_request("POST", target, {"Content-Type": "text/plain", "Transfer-Encoding": "chunked"}))
    chunk = b"x" * 16384
    for _ in range(limit // len(chunk) + 2):
        if not await client.send(b"%x\r\n%s\r\n" % (len(chunk), chunk)):
            break
    assert_refused(await client.reply(), 413, "payload_too_large")


@pytest.mark.parametrize("route", ["polling", "api"])
async def test_slow_body_gets_408_within_the_deadline(server: Server, raw_clients: list[Raw], route: str) -> None:
    """A body that trickles in (a byte every 0.4 s) gets 408 after body_timeout, and the connection closes."""
    target, _ = await body_target(server, route)
    client = await Raw.connect(port_of(server))
    raw_clients.append(client)
    started = time.monotonic()
    await client.send(http_request("POST", target, {"Content-Type": "application/json", "Content-Length": "100"}))

    async def trickle() -> None:
        while await client.send(b" "):
            await asyncio.sleep(0.4)

    dripping = asyncio.create_task(trickle())
    try:
        reply = await client.reply(timeout=BODY_TIMEOUT + 2)
    finally:
        dripping.cancel()
    assert_refused(reply, 408, "request_timeout")
    assert time.monotonic() - started < BODY_TIMEOUT + 1


@pytest.mark.parametrize(
    ("method", "target"),
    [("POST", "/api/auth/login"), ("POST", "/socket.io/?EIO=4&transport=polling&sid=x"), ("GET", "/healthz")],
)
async def test_content_length_with_transfer_encoding_is_refused_and_closed(
    server: Server, raw_clients: list[Raw], method: str, target: str
) -> None:
    """RFC 9112 section 6.3: Content-Length with Transfer-Encoding is an error; 400, then the connection closes."""
    client = await Raw.connect(port_of(server))
    raw_clients.append(client)
    headers = {"Content-Type": "application/json", "Content-Length": "7", "Transfer-Encoding": "chunked"}
    await client.send(http_request(method, target, headers, b"2\r\n{}\r\n0\r\n\r\n"))
    assert_refused(await client.reply(), 400, "bad_request")


KNOWN_BODY_ROUTES = {
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/refresh"),
    ("POST", "/api/auth/logout"),
    ("POST", "/api/admin/users"),
    ("PATCH", "/api/admin/users/{username}"),
    ("POST", "/api/admin/rooms"),
    ("PATCH", "/api/admin/rooms/{room}"),
    ("PUT", "/api/admin/rooms/{room}/grants/{username}"),
    ("PUT", "/api/rooms/{room}/grants/{username}"),
}
PATH_VALUES = {"room": "ops", "username": "admin"}  # parameters of body routes, for the test's admin and room


async def body_routes(api: Api) -> list[tuple[str, str]]:
    """(method, path) of every route that takes a body, as the OpenAPI document lists them."""
    paths = (await api.get("/openapi.json")).json()["paths"]
    routes = {(method.upper(), path) for path, item in paths.items() for method in item
              if method in ("post", "put", "patch")}
    assert KNOWN_BODY_ROUTES <= routes, KNOWN_BODY_ROUTES - routes
    return sorted((method, re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m[1], "1"), path))
                  for method, path in routes)


MALFORMED_BODIES = [
    b"\xf0",  # invalid UTF-8
    b'{"username": "\xff", "password": "x"}',
    b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
    b"{",  # not JSON
    b"{'username': 'a'}",
    b'{"username": "a"} trailing',
    b"[]",  # JSON, but not an object
    b'"admin"',
    b"1",
    b"null",
    b"[" * 20000,  # nested deeper than the parser goes
]


async def test_malformed_bodies_are_bad_requests_on_every_body_route(admin_api: Api) -> None:
    """Invalid UTF-8, text that is not JSON, and a JSON value that is not an object: 400 bad_request
    in the API's shape on every route that takes a body, never a 500."""
    await admin_api.create_room("ops")
    for method, path in await body_routes(admin_api):
        for body in MALFORMED_BODIES:
            reply = await admin_api.request(method, path, content=body, headers={"Content-Type": "application/json"})
            assert reply.status_code == 400, (method, path, body[:40], reply.text)
            error = reply.json()["error"]
            assert error["code"] == "bad_request" and isinstance(error["message"], str), (method, path, body[:40])


async def test_sign_in_routes_refuse_bad_utf8_without_a_token(api: Api) -> None:
    """No sign-in needed to reach the body parser: anyone's invalid UTF-8 is a 400."""
    for path in ("/api/auth/login", "/api/auth/refresh", "/api/auth/logout"):
        reply = await api.http.post(path, content=b"\xf0", headers={"Content-Type": "application/json"})
        assert (reply.status_code, reply.json()["error"]["code"]) == (400, "bad_request"), path


async def test_every_response_has_nosniff_once(server: Server, api: Api) -> None:
    """Engine.IO polling replies (open, post, errors) and the API's replies carry nosniff, once."""
    sid = await polling_sid(server)
    async with httpx.AsyncClient(base_url=server.url) as http:
        replies = [
            await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"}),
            await http.post("/socket.io/", params={"EIO": "4", "transport": "polling", "sid": sid}, content=b"40"),
            await http.get("/socket.io/", params={"EIO": "4", "transport": "polling", "sid": "nope"}),
            await http.get("/healthz"),
            await http.get("/api/me"),
            await http.get("/"),
        ]
    assert [r.status_code for r in replies] == [200, 200, 400, 200, 401, 200]
    for reply in replies:
        assert reply.headers.get_list("x-content-type-options") == ["nosniff"], reply.request.url


def test_body_timeout_default() -> None:
    """The shipped deadline for a request body (config/default.toml) is 10 seconds."""
    from quart_rooms.settings import load_settings

    assert load_settings(environ={}).body_timeout == 10
