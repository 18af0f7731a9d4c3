"""Fixtures: a real Hypercorn server on a loopback port, on SQLite or PostgreSQL.

PostgreSQL tests read QUART_ROOMS_TEST_POSTGRES_URL (for example
postgresql+asyncpg://postgres@127.0.0.1:5432/test) and skip with a reason
when it is unset. With QUART_ROOMS_TEST_NO_SKIPS=1 (set by .ci/run) a skipped
test fails the run.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypercorn.asyncio import serve

from quart_rooms.app import create_app
from quart_rooms.serve import hypercorn_config
from quart_rooms.services import Services
from quart_rooms.settings import Settings, load_settings
from tests.helpers import Api, Server

POSTGRES_ENV = "QUART_ROOMS_TEST_POSTGRES_URL"
ADMIN_PASSWORD = "admin-password-1"
both_backends = pytest.mark.parametrize("backend", ["sqlite", "postgres"])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With QUART_ROOMS_TEST_NO_SKIPS=1, any skipped test fails the run."""
    if os.environ.get("QUART_ROOMS_TEST_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"FAILED: {len(skipped)} tests were skipped, and this run allows none", red=True)
        session.exitstatus = 1


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def backend() -> str:
    """The database kind of a test: SQLite unless the test asks for both."""
    return "sqlite"


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database of the test's backend."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)")
    name = f"qr_{uuid.uuid4().hex[:12]}"
    plain = base.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(plain)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield base.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(plain)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings a test changes; override this fixture in a module to change them."""
    return {}


def make_settings(database_url: str, instance: Path, **overrides: Any) -> Settings:
    """Test settings: a private instance folder, a random secret, no outside environment."""
    return load_settings(
        environ={},
        instance_path=str(instance),
        database_url=database_url,
        jwt_secret=overrides.pop("jwt_secret", secrets.token_urlsafe(32)),
        **overrides,
    )


@asynccontextmanager
async def running(settings: Settings, *, port: int | None = None) -> AsyncIterator[Server]:
    """The whole app served by Hypercorn on a loopback port until the block ends."""
    app = create_app(settings)
    services: Services = app.services  # type: ignore[attr-defined]
    port = port or free_port()
    config = hypercorn_config(settings, host="127.0.0.1", port=port)  # the production limits
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, task)
        yield Server(url=url, services=services, admin_password=ADMIN_PASSWORD, app=app)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except TimeoutError:
            for pending in asyncio.all_tasks():  # where a stop hung, in the test's captured output
                print(f"still running at the server's stop: {pending!r}", file=sys.stderr)
                pending.print_stack(file=sys.stderr)
            raise


async def add_admin(server: Server) -> None:
    """Create the test admin account through the real admin use case."""
    services = server.services
    await services.admin.create_user("test", "admin", ADMIN_PASSWORD, is_admin=True)


@pytest.fixture
async def server(database_url: str, tmp_path: Path, settings_overrides: dict[str, Any]) -> AsyncIterator[Server]:
    """The whole app served by Hypercorn on a loopback port, with one admin account."""
    async with running(make_settings(database_url, tmp_path / "instance", **settings_overrides)) as started:
        await add_admin(started)
        yield started


async def _wait_ready(url: str, task: asyncio.Task[Any]) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        for _ in range(200):
            if task.done():
                task.result()
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.02)
    raise RuntimeError("the test server did not become ready")


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    """An HTTP client of the test server, signed in as nobody yet."""
    async with Api(server) as client:
        yield client


@pytest.fixture
async def admin_api(server: Server) -> AsyncIterator[Api]:
    """An HTTP client signed in as the admin."""
    async with Api(server) as client:
        await client.login("admin", server.admin_password)
        yield client
