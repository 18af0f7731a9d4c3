"""Browser tests: Playwright (async API) drives Debian's chromium against the real server.

The server runs under Hypercorn on a loopback port in the test's own event
loop, so a test can stop it and start it again (same port, same SQLite file,
same JWT secret) while the browser stays open.

Chromium: QUART_ROOMS_TEST_CHROMIUM, else /usr/bin/chromium. When that default
is missing and the variable is unset the tests are skipped with the reason;
when the variable is set, a missing browser fails them.

One Chromium serves the whole run (starting it costs about two seconds), so
these tests and their fixtures share the session's event loop; each test still
gets its own server and its own browser contexts (cookies, storage).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypercorn.asyncio import serve
from hypercorn.config import Config
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright, expect

from quart_rooms.app import create_app
from quart_rooms.services import Services
from quart_rooms.settings import load_settings
from tests.helpers import Api

CHROMIUM_ENV = "QUART_ROOMS_TEST_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
ADMIN_PASSWORD = "admin-password-1"
USER_PASSWORD = "password-123"
REPO = Path(__file__).resolve().parents[2]
# Screenshots go to a temporary folder, so a test run leaves the tracked files alone. To
# take the ones in the docs: QUART_ROOMS_SCREENSHOTS=docs/screenshots python -m pytest tests/browser
SCREENSHOTS_ENV = "QUART_ROOMS_SCREENSHOTS"

expect.set_options(timeout=8000)
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests run in the session's event loop, where the shared browser lives."""
    session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if pytest_asyncio.is_async_test(item) and HERE in item.path.parents:
            item.add_marker(session_loop, append=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """The whole app under Hypercorn on one loopback port; stop() and start() keep port, database and secret."""

    def __init__(self, tmp_path: Path, overrides: dict[str, Any]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_password = ADMIN_PASSWORD
        self._settings = dict(
            environ={},
            instance_path=str(tmp_path / "instance"),
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'rooms.db'}",
            jwt_secret=secrets.token_urlsafe(32),
            **overrides,
        )
        self.services: Services | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        app = create_app(load_settings(**self._settings))
        self.services = app.services  # type: ignore[attr-defined]
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 1
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(serve(app, config, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]
        async with httpx.AsyncClient() as client:
            for _ in range(250):
                if self._task.done():
                    self._task.result()
                try:
                    if (await client.get(self.url + "/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.02)
        raise RuntimeError("the test server did not become ready")

    async def stop(self) -> None:
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        await asyncio.wait_for(self._task, 10)
        self._task = None

    async def create_admin(self) -> None:
        assert self.services is not None
        await self.services.admin.create_user("test", "admin", ADMIN_PASSWORD, is_admin=True)


@pytest.fixture
def server_settings() -> dict[str, Any]:
    """Settings a test changes (parametrize this fixture to change them)."""
    return {}


@pytest_asyncio.fixture(loop_scope="session")
async def live(tmp_path: Path, server_settings: dict[str, Any]) -> AsyncIterator[LiveServer]:
    """A running server with one admin account (admin / ADMIN_PASSWORD)."""
    server = LiveServer(tmp_path, server_settings)
    await server.start()
    await server.create_admin()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def admin(live: LiveServer) -> AsyncIterator[Api]:
    """An HTTP client signed in as the admin (create_user, create_room, grant, revoke)."""
    async with Api(live) as client:  # type: ignore[arg-type]
        await client.login("admin", ADMIN_PASSWORD)
        yield client


def _chromium_path() -> str:
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        if not Path(configured).exists():
            pytest.fail(f"{CHROMIUM_ENV}={configured}, but there is no such file")
        return configured
    if not Path(DEFAULT_CHROMIUM).exists():
        pytest.skip(
            f"browser tests need chromium: install it (apt-get install chromium) or set {CHROMIUM_ENV} "
            f"to its path; {DEFAULT_CHROMIUM} is missing"
        )
    return DEFAULT_CHROMIUM


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Chromium, headless, for the whole run."""
    path = _chromium_path()
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


@dataclass
class Tab:
    """A page in its own browser context (its own cookies), with what it logged."""

    page: Page
    context: BrowserContext
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    async def sign_in(self, username: str, password: str = USER_PASSWORD) -> None:
        """Sign in through the form and wait until the chat view is there."""
        page = self.page
        form = page.get_by_role("region", name="Sign in")
        await form.get_by_label("Username").fill(username)
        await form.get_by_label("Password").fill(password)
        await form.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#whoami")).to_have_text(username)
        await expect(page.locator("#conn")).to_have_text("Connected")

    def room_button(self, room: str) -> Any:
        return self.page.locator(f'#room-list button[data-room="{room}"]')

    async def open_room(self, room: str) -> None:
        """Click a room in the list and wait until it is joined."""
        await self.room_button(room).click()
        await expect(self.page.locator("#room-sub")).not_to_contain_text("joining")
        await expect(self.room_button(room)).to_contain_text("joined")

    def log(self, room: str) -> Any:
        return self.page.locator(f'.log[data-room="{room}"]')

    def messages(self, room: str) -> Any:
        return self.log(room).locator("li.msg .text")

    async def say(self, text: str) -> None:
        """Type into the message box and press Enter; waits until the box is empty (sent)."""
        box = self.page.get_by_label("Message", exact=True)
        await box.fill(text)
        await box.press("Enter")
        await expect(box).to_have_value("")


@pytest_asyncio.fixture(loop_scope="session")
async def open_tab(browser: Browser, live: LiveServer) -> AsyncIterator[Callable[..., Awaitable[Tab]]]:
    """Open the page in a fresh browser context. At the end: no page errors and no CSP violations."""
    tabs: list[Tab] = []

    async def opener(**context_options: Any) -> Tab:
        context = await browser.new_context(base_url=live.url, **context_options)
        page = await context.new_page()
        tab = Tab(page=page, context=context)

        async def on_dialog(dialog: Any) -> None:
            tab.dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

        def on_console(message: ConsoleMessage) -> None:
            tab.console.append(f"{message.type}: {message.text}")

        page.on("dialog", on_dialog)
        page.on("console", on_console)
        page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
        await page.goto("/")
        await expect(page.locator("#booting")).to_be_hidden()
        tabs.append(tab)
        return tab

    yield opener
    try:
        for tab in tabs:
            assert tab.page_errors == [], tab.page_errors
            violations = [line for line in tab.console if "Content Security Policy" in line]
            assert violations == [], violations
    finally:
        for tab in tabs:
            await tab.context.close()


def save_screenshot(name: str) -> Path:
    """Where a screenshot goes: the folder QUART_ROOMS_SCREENSHOTS names (relative to the
    repository, e.g. docs/screenshots), else a temporary folder."""
    configured = os.environ.get(SCREENSHOTS_ENV)
    folder = REPO / configured if configured else Path(tempfile.gettempdir()) / "quart-rooms-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
