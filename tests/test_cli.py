"""The command line as a user runs it: create-user, migrate, and serve as a real process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

CLI = [sys.executable, "-m", "quart_rooms.cli"]


def run_cli(args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
    return subprocess.run(CLI + args, cwd=cwd, input=stdin, capture_output=True, text=True, env=env, timeout=60)


def test_serve_create_user_and_sign_in(tmp_path: Path) -> None:
    """A fresh folder: serve says how to make an admin; create-user makes one; login works over HTTP."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
    server = subprocess.Popen(
        CLI + ["serve", "--port", str(port)], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("serve did not start")
        created = run_cli(["create-user", "root", "--admin"], tmp_path, stdin="root-password\n")
        assert created.returncode == 0, created.stderr
        assert "created admin user root" in created.stdout
        duplicate = run_cli(["create-user", "root"], tmp_path, stdin="root-password\n")
        assert duplicate.returncode == 1 and "exists already" in duplicate.stderr
        short = run_cli(["create-user", "shorty"], tmp_path, stdin="short\n")
        assert short.returncode != 0 and "password" in short.stderr

        reply = httpx.post(url + "/api/auth/login", json={"username": "root", "password": "root-password"})
        assert reply.status_code == 200
        token = reply.json()["access_token"]
        me = httpx.get(url + "/api/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json() == {"username": "root", "is_admin": True}
        assert (tmp_path / "instance" / "quart-rooms.db").exists()
        assert (tmp_path / "instance" / "jwt_secret").exists()
        backed = run_cli(["backup", "copy.db"], tmp_path)  # while the server runs
        assert backed.returncode == 0, backed.stderr
        with sqlite3.connect(tmp_path / "copy.db") as copy:
            assert copy.execute("SELECT username FROM users").fetchall() == [("root",)]
        again = run_cli(["backup", "copy.db"], tmp_path)
        assert again.returncode == 1 and "exists" in again.stderr
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=20)
    assert "quart-rooms create-user admin --admin" in output
    assert "serving on http://127.0.0.1:" in output


def test_version_and_backup_of_postgresql(tmp_path: Path) -> None:
    """--version names the release; backup points PostgreSQL users to pg_dump."""
    from quart_rooms import __version__

    version = run_cli(["--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"quart-rooms {__version__}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
    env["QUART_ROOMS_DATABASE_URL"] = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
    refused = subprocess.run(CLI + ["backup", "x.db"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "pg_dump" in refused.stderr


def test_migrate_and_bad_settings(tmp_path: Path) -> None:
    """migrate makes the schema; a bad setting stops the command with its name."""
    done = run_cli(["migrate"], tmp_path)
    assert done.returncode == 0 and "up to date" in done.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
    env["QUART_ROOMS_PORT"] = "many"
    bad = subprocess.run(CLI + ["migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "'port'" in bad.stderr
