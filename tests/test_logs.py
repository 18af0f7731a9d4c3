"""Logs as an operator reads them: one format in every process, JSON on request, a line per sign-in,
denial and admin action, an access log, and never a token or a password."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import socketio

from tests.conftest import free_port

PASSWORDS = ("boss-password-1", "alice-password-9", "wrong-password-7", "new-alice-pass-3")


async def _wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            assert process.poll() is None, process.communicate()[0]
            try:
                if (await client.get(url + "/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("serve did not start")


async def test_json_logs_name_events_and_hold_no_secret(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
    env.update({"QUART_ROOMS_JWT_SECRET": secrets.token_urlsafe(32), "QUART_ROOMS_LOG_FORMAT": "json"})
    created = subprocess.run([sys.executable, "-m", "quart_rooms.cli", "create-user", "boss", "--admin"],
                             cwd=tmp_path, env=env, input=PASSWORDS[0] + "\n", capture_output=True, text=True)
    assert created.returncode == 0, created.stderr
    server = subprocess.Popen([sys.executable, "-m", "quart_rooms.cli", "serve", "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    secrets_seen: list[str] = list(PASSWORDS)
    try:
        await _wait_ready(url, server)
        async with httpx.AsyncClient(base_url=url) as http:
            boss = (await http.post("/api/auth/login", json={"username": "boss", "password": PASSWORDS[0]})).json()
            secrets_seen += [boss["access_token"], boss["refresh_token"]]
            auth = {"Authorization": f"Bearer {boss['access_token']}"}
            await http.post("/api/admin/users", json={"username": "alice", "password": PASSWORDS[1]}, headers=auth)
            await http.post("/api/admin/rooms", json={"name": "vault"}, headers=auth)
            await http.post("/api/auth/login", json={"username": "alice", "password": PASSWORDS[2]})
            alice = (await http.post("/api/auth/login", json={"username": "alice", "password": PASSWORDS[1]})).json()
            renewed = (await http.post("/api/auth/refresh", json={"refresh_token": alice["refresh_token"]})).json()
            secrets_seen += [alice["access_token"], alice["refresh_token"], renewed["access_token"],
                             renewed["refresh_token"]]
            for transport in ("websocket", "polling"):
                client = socketio.AsyncClient(reconnection=False)
                await client.connect(url, auth={"token": renewed["access_token"]}, transports=[transport])
                denied = await client.call("join", {"room": "vault"})
                assert denied["error"] == "forbidden"
                await client.disconnect()
            await http.patch("/api/admin/users/alice", json={"password": PASSWORDS[3]}, headers=auth)
            await http.post("/api/auth/logout", json={"refresh_token": boss["refresh_token"]})
    finally:
        server.send_signal(signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=30)
    output = stdout + stderr
    for secret in secrets_seen:
        assert secret not in output, "a token or password reached the log"
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message", "process"} <= set(r) for r in records)
    messages = [r["message"] for r in records]

    def has(text: str) -> bool:
        return any(text in m for m in messages)

    assert has("sign-in: user=boss") and has("sign-in: user=alice")
    assert has("sign-in failed: user='alice'")
    assert has("access denied: user=alice room='vault'") and has("reason=no_access")
    assert has("admin action: actor=boss action=user.create target=user:alice")
    assert has("admin action: actor=boss action=user.update target=user:alice password")
    access = [r for r in records if r["logger"] == "quart_rooms.access_log"]
    assert any('"POST /api/auth/login' in r["message"] and " 200 " in r["message"] for r in access)
    assert not any("sid=" in r["message"] or "?" in r["message"].split('"')[1] for r in access)
