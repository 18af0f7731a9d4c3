"""Frames below the events: binary packets, malformed packets, sessions that never connect."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest

from quart_rooms.realtime import server as realtime_server
from tests.helpers import Api, Server


async def _open(server: Server, token: str | None) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket")
    assert (await ws.receive_str(timeout=5)).startswith("0{")
    if token is not None:
        await ws.send_str("40" + json.dumps({"token": token}))
        assert (await ws.receive_str(timeout=5)).startswith("40{")
    return http, ws


async def _closed_within(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> bool:
    """True when the server closes the websocket within `seconds` (pings are answered meanwhile)."""
    async def read() -> None:
        async for frame in ws:
            if frame.type == aiohttp.WSMsgType.TEXT and frame.data == "2":
                await ws.send_str("3")
    try:
        await asyncio.wait_for(read(), seconds)
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize("frames", [
    ['451-["message",{"_placeholder":true,"num":0}]'],  # announces an attachment
    ['459999999-["message",{"_placeholder":true,"num":0}]', b"\x00" * 1000],  # and sends some
    ['461-[{"_placeholder":true,"num":0}]'],  # a binary ack
])
async def test_binary_packets_close_the_connection(
    server: Server, admin_api: Api, frames: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The contract has no binary events: announcing attachments closes the connection at once, so
    no attachment is ever buffered (python-socketio would keep as many as a packet announces)."""
    http, ws = await _open(server, admin_api.token)
    try:
        for frame in frames:
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        assert await _closed_within(ws, 3)
        assert not server.app.realtime.sio._binary_packet  # nothing kept for the socket
    finally:
        await http.close()


async def test_malformed_packets_are_ignored_without_tracebacks(
    server: Server, admin_api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Frames that do not parse log no error and no traceback; the socket still works."""
    caplog.set_level(logging.INFO)
    http, ws = await _open(server, admin_api.token)
    try:
        for frame in ["4", "49", "44{}", "4x1[]", "42/x", "4212345", "42[", '42{"a":1}'] * 20:
            await ws.send_str(frame)
        await ws.send_str('421["join",{"room":"nowhere"}]')
        reply = await ws.receive_str(timeout=5)
        while not reply.startswith("43"):  # the welcome, pings
            reply = await ws.receive_str(timeout=5)
        assert reply.startswith("431") and json.loads(reply[3:])[0]["error"] == "no_such_room"
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
        assert errors == [], [r.getMessage() for r in errors]
    finally:
        await http.close()


async def test_a_session_that_never_connects_is_closed(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Engine.IO session that answers pings but never sends a Socket.IO CONNECT is closed."""
    monkeypatch.setattr(realtime_server, "CONNECT_TIMEOUT", 0.5)
    http, ws = await _open(server, None)
    try:
        assert await _closed_within(ws, 3)
    finally:
        await http.close()
    http, ws = await _open(server, None)  # one that does connect stays
    try:
        await ws.send_str("40")  # no token: refused, which is an answer, then closed by the client's choice
        reply = await ws.receive_str(timeout=5)
        assert reply.startswith("44")
    finally:
        await http.close()


async def test_a_session_that_leaves_the_namespace_and_stays_idle_is_closed(
    server: Server, admin_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that leaves the namespace (41) but keeps its Engine.IO session open, answering pings,
    gets CONNECT_TIMEOUT to connect again and is then closed, as a session that never connected."""
    monkeypatch.setattr(realtime_server, "CONNECT_TIMEOUT", 0.5)
    http, ws = await _open(server, admin_api.token)
    try:
        assert not await _closed_within(ws, 1)  # connected: the window of its opening has passed
        await ws.send_str("41")
        assert await _closed_within(ws, 3)
    finally:
        await http.close()
    http, ws = await _open(server, admin_api.token)  # leaving and connecting again in time: stays
    try:
        assert not await _closed_within(ws, 1)
        await ws.send_str("41")
        await ws.send_str("40" + json.dumps({"token": admin_api.token}))
        assert not await _closed_within(ws, 1.5)
    finally:
        await http.close()


async def test_a_second_connect_on_a_connected_session_is_confirmed_not_refused(
    server: Server, admin_api: Api
) -> None:
    """An official client whose auth callback answers twice (a slow token renewal across a reconnect)
    sends CONNECT twice on one session: the second is answered with the same sid (python-socketio
    would answer CONNECT_ERROR, after which the client reads nothing while calling itself connected),
    identity stays the first token's, and events still get their acks."""
    await admin_api.create_user("other")
    other = await admin_api.token_for("other")

    async def next_packet(ws: aiohttp.ClientWebSocketResponse, *prefixes: str) -> str:
        while True:
            frame = await ws.receive_str(timeout=5)
            if frame.startswith(prefixes):
                return frame

    http = aiohttp.ClientSession()
    try:
        ws = await http.ws_connect(server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket")
        await next_packet(ws, "0{")
        await ws.send_str("40" + json.dumps({"token": admin_api.token}))
        first = json.loads((await next_packet(ws, "40", "44"))[2:])
        welcome = json.loads((await next_packet(ws, '42["welcome"'))[2:])[1]
        await ws.send_str("40" + json.dumps({"token": other}))  # even with another account's token
        second = await next_packet(ws, "40", "44")
        assert second.startswith("40{"), second
        assert json.loads(second[2:])["sid"] == first["sid"]
        await ws.send_str('421["join",{"room":"nowhere"}]')
        ack = json.loads((await next_packet(ws, "431"))[3:])[0]
        assert ack["error"] == "no_such_room"  # answered as the admin (a user would get forbidden)
        assert welcome["user"] == "admin"
    finally:
        await http.close()
