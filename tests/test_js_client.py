"""The official JavaScript Socket.IO client: connect, join, message, refusal and kick."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.cluster_support import JS_DIR, node_or_skip
from tests.helpers import Api, Server


async def test_javascript_client_path(server: Server, admin_api: Api) -> None:
    """A bad token is refused with err.data.code; two JS clients talk; a revoke kicks at once."""
    node = node_or_skip()
    for name in ("alice", "bob"):
        await admin_api.create_user(name)
    await admin_api.create_room("red")
    await admin_api.create_room("blue")
    await admin_api.grant("red", "alice")
    await admin_api.grant("red", "bob")
    process = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "client.mjs"), server.url,
        await admin_api.token_for("alice"), await admin_api.token_for("bob"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    steps: dict[str, Any] = {}
    try:
        while True:
            line = await asyncio.wait_for(process.stdout.readline(), 20)
            if not line:
                break
            step = json.loads(line)
            steps[step.pop("step")] = step
            if "ready" in steps and "kicked" not in steps and "revoked" not in steps:
                steps["revoked"] = True
                await admin_api.revoke("red", "bob")
        code = await asyncio.wait_for(process.wait(), 10)
    finally:
        if process.returncode is None:
            process.kill()
    stderr = (await process.stderr.read()).decode() if process.stderr else ""
    assert code == 0, (steps, stderr)

    assert steps["bad_token"] == {"refused": True, "code": "unauthorized",
                                  "message": "The token is not valid."}
    assert steps["welcome"]["alice"]["user"] == "alice"
    assert steps["join_alice"]["ok"] is True and steps["join_alice"]["role"] == "write"
    assert steps["join_bob"]["members"] == ["alice", "bob"]
    assert steps["forbidden"] == {"ok": False, "error": "forbidden", "message": "You may not enter this room."}
    assert steps["send"]["ok"] is True and steps["send"]["id"] == 1
    for who in ("alice", "bob"):
        [message] = steps["received"][who]
        assert (message["id"], message["user"], message["msg"]) == (1, "alice", "hi from js")
    assert steps["received"]["presence"] == [{"room": "red", "user": "bob", "action": "joined"}]
    assert steps["kicked"] == {"room": "red", "reason": "revoked"}
    assert steps["after_kick"]["error"] == "not_in_room"
