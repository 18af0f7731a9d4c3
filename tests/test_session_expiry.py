"""A live socket whose access token runs out without a refresh is told and disconnected."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.helpers import Api, Chatter, Server


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"access_token_ttl": 2}


async def test_session_expired_then_disconnected(server: Server, admin_api: Api) -> None:
    """With a 2 s token and no refresh: `session_expired`, then the server closes the socket."""
    await admin_api.create_user("dora")
    chatter = Chatter(server.url)
    await chatter.connect(await admin_api.token_for("dora"))
    try:
        [welcome] = await chatter.wait_for("welcome")
        assert welcome["expires_in"] <= 2
        [expired] = await chatter.wait_for("session_expired", timeout=6)
        assert expired == {"reason": "token_expired"}
        await chatter.wait_disconnected()
    finally:
        await chatter.close()


async def test_refresh_keeps_the_socket(server: Server, admin_api: Api) -> None:
    """A socket that sends `refresh` in time stays connected past its first token's end."""
    await admin_api.create_user("eve")
    chatter = Chatter(server.url)
    await chatter.connect(await admin_api.token_for("eve"))
    try:
        # Tokens carry whole seconds, so a 2 s token may have just over 1 s left: refresh often.
        for _ in range(7):
            await asyncio.sleep(0.5)
            ack = await chatter.call("refresh", {"token": await admin_api.token_for("eve")})
            assert ack["ok"] is True
        assert chatter.sio.connected
        assert chatter.events["session_expired"] == []
    finally:
        await chatter.close()
