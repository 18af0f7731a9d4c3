"""permessage-deflate: refused by default, agreed when websocket_compression is set."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import make_settings, running


async def handshake_headers(url: str) -> dict[str, str]:
    """Open a websocket to the Engine.IO endpoint offering deflate, as a browser does; the 101's headers."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
        + f"Host: {host}:{port}\r\n".encode()
        + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    status, *lines = head.decode().strip().split("\r\n")
    assert status.startswith("HTTP/1.1 101"), status
    return {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}


@pytest.mark.parametrize(("allowed", "agreed"), [(False, False), (True, True)])
async def test_deflate_offer(tmp_path: Path, allowed: bool, agreed: bool) -> None:
    """By default the 101 carries no extension; with websocket_compression it agrees to deflate."""
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 't.db'}", tmp_path / "i",
                             websocket_compression=allowed)
    async with running(settings) as server:
        headers = await handshake_headers(server.url)
    assert ("permessage-deflate" in headers.get("sec-websocket-extensions", "")) is agreed
