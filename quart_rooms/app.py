"""The application factory: Quart for HTTP, python-socketio for live rooms, one ASGI app."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Coroutine
from typing import Any

import socketio
from quart import Quart, request
from quart_schema import Info, Tag

from quart_rooms import __version__
from quart_rooms.admin.routes import blueprint as admin_blueprint
from quart_rooms.api import errors
from quart_rooms.api.openapi import ApiSchema
from quart_rooms.api.rooms import blueprint as rooms_blueprint
from quart_rooms.auth.routes import blueprint as auth_blueprint
from quart_rooms.health import blueprint as health_blueprint
from quart_rooms.presence import Presence, SharedPresence
from quart_rooms.proxy import TrustedProxies, parse_networks
from quart_rooms.realtime.broker import Broker
from quart_rooms.realtime.compression import set_compression
from quart_rooms.realtime.effects import LiveEffects
from quart_rooms.realtime.hub import Hub
from quart_rooms.realtime.namespace import ChatNamespace
from quart_rooms.realtime.server import create_server
from quart_rooms.realtime.sessions import Sockets
from quart_rooms.request_limits import limit_requests
from quart_rooms.services import FAST_POLL, Services
from quart_rooms.settings import Settings, load_settings
from quart_rooms.storage.db import migrate
from quart_rooms.tasks import within
from quart_rooms.web.routes import blueprint as web_blueprint

log = logging.getLogger(__name__)
SAFETY_POLL = 5.0  # seconds between checks of the feeds against storage while the broker works
SWEEP = 60.0  # seconds between drops of feeds that no local socket reads


class Realtime:
    """The live side of one process: sockets, presence, feeds' delivery, the broker, shutdown."""

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.services = services
        self.node = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.sio = create_server(settings)
        shared = SharedPresence(settings.redis_url, settings.redis_channel, self.node) if settings.redis_url else None
        self.hub = Hub(self.sio, Sockets(), Presence(shared))
        self.namespace = ChatNamespace(settings, services.tokens, services.chat, self.hub, services.metrics)
        self.sio.register_namespace(self.namespace)
        services.feeds.deliver = self._deliver
        services.changes.listeners.append(
            LiveEffects(self.hub, services.access, services.feeds, services.db, services.metrics)
        )
        self.hub.presence.on_reaped = self.hub.reaped
        self.broker: Broker | None = None
        if settings.redis_url:
            self.broker = Broker(
                settings.redis_url, settings.redis_channel, self.node,
                on_message=self._received, on_up=self._broker_up, on_down=self._broker_down,
            )
            services.publish = self.hub.publish = self.broker.publish
            services.changes.announce = lambda: self._publish({"t": "c"})
            services.broker_ping = self.broker.ping
        self._poller: asyncio.Task[None] | None = None
        self._stopped = False

    def _publish(self, message: dict[str, Any]) -> None:
        if self.broker is not None:
            self.broker.publish(message)

    def _deliver(self, event: str, room: str, data: dict[str, object]) -> None:
        sent = self.hub.deliver(event, room, data)
        if event == "message":
            self.services.metrics.deliveries.inc(sent)

    def _received(self, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == "m":
            self.services.received(message)
        elif kind == "c":
            self.services.changes.wake()
        elif kind == "p":
            self.hub.local_presence(message["room"], message["user"], message["action"])

    def _broker_up(self) -> None:
        self.services.changes.fast = False
        self.services.changes.wake()
        self.hub.spawn(self._catch_up())

    def _broker_down(self) -> None:
        self.services.changes.fast = True
        self.services.changes.wake()

    async def _catch_up(self) -> None:
        try:
            await self.services.feeds.catch_up()
        except Exception:
            log.warning("catching up the room feeds from storage failed", exc_info=True)

    async def _poll(self) -> None:
        """Feeds against storage (fast while the broker is away), and idle feeds dropped."""
        since_sweep = 0.0
        while True:
            healthy = self.broker is None or self.broker.healthy
            interval = SAFETY_POLL if healthy else FAST_POLL
            await asyncio.sleep(interval)
            if self.broker is not None:
                await self._catch_up()
            since_sweep += interval
            if since_sweep >= SWEEP:
                since_sweep = 0.0
                self.services.feeds.sweep(self.hub.presence.local.has)

    async def start(self) -> None:
        """Start following changes and taking messages; connect to the broker."""
        services = self.services
        await services.changes.start()
        if self.broker is not None:
            self.broker.deployment = services.changes.deployment
            await self.broker.claim()
        services.chat.writer.start()
        if self.broker is not None:
            await self.broker.start()
        self.hub.presence.start()
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="feed-poller")

    async def stop(self) -> None:
        """Stop taking connections and messages, store what was accepted, close every socket, stop.

        Contract 1.1, "Shutdown": every acked message is stored, and clients
        reconnect (their transport closes, so official clients retry), within
        `shutdown_timeout` seconds.
        """
        if self._stopped:
            return
        self._stopped = True
        services = self.services
        # Hypercorn's graceful_timeout took up to 0.3 of the budget before this (serve.py); the shares
        # here add up to 0.65, and closing the database takes the last 0.05.
        budget = services.settings.shutdown_timeout
        self.namespace.accepting = False
        await services.chat.writer.stop(timeout=budget * 0.3)
        await services.tasks.drain(timeout=budget * 0.05)
        await _bounded("closing the sockets", budget * 0.2, self.hub.close_all())
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        # The rest only lets go of background work and connections, side by side: each step is
        # bounded, so a stalled database or Redis server cannot hold the process past its budget.
        steps = {
            "stopping the change follower": services.changes.stop(),
            "stopping the room feeds": services.feeds.stop(),
            "leaving shared presence": self.hub.presence.stop(),
        }
        if self.broker is not None:
            steps["closing the broker"] = self.broker.stop()
        await asyncio.gather(*(_bounded(step, budget * 0.1, work) for step, work in steps.items()))


async def _bounded(step: str, seconds: float, work: Coroutine[Any, Any, None]) -> None:
    """Run one shutdown step for at most `seconds`; a step that overruns is logged and left behind."""
    try:
        await within(seconds, work)
    except TimeoutError:
        log.warning("shutdown: %s took longer than %.1f s; going on without it", step, seconds)


def create_quart(services: Services, realtime: Realtime) -> Quart:
    """The Quart app with its routes; its lifespan opens storage and starts the live side."""
    app = Quart(__name__)
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.config["QUART_SCHEMA_CONVERT_CASING"] = False
    app.extensions["quart_rooms"] = services
    ApiSchema(
        app,
        info=Info(
            title="quart-rooms",
            version=__version__,
            summary="Room-based chat: sign-in, rooms and history, moderation, administration.",
            description="The HTTP half of the quart-rooms API; docs/api.md in the repository describes it all, "
            "the Socket.IO events included (docs/asyncapi.yaml documents those).",
        ),
        tags=[
            Tag(name="sign-in", description="Access and refresh tokens; the refresh token is also an HttpOnly cookie."),
            Tag(name="rooms", description="The signed-in user: rooms, history, deleting messages, moderating grants."),
            Tag(name="admin", description="Accounts, rooms, grants and the audit log (admins only)."),
            Tag(name="operations", description="Liveness, readiness and metrics (no token)."),
        ],
        security_schemes={"bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}},
        security=[{"bearer": []}],
    )
    for blueprint in (auth_blueprint, rooms_blueprint, admin_blueprint, health_blueprint, web_blueprint):
        app.register_blueprint(blueprint)
    errors.register(app)

    @app.before_serving
    async def _open() -> None:
        if services.settings.auto_migrate:
            await migrate(services.db.write_engine)
        await realtime.start()

    @app.after_serving
    async def _close() -> None:
        await realtime.stop()
        services.passwords.close()
        await _bounded("closing the database connections", services.settings.shutdown_timeout * 0.05, services.db.dispose())

    @app.after_request
    async def _count(response: Any) -> Any:
        services.metrics.http_requests.labels(request.method, str(response.status_code)).inc()
        return response

    return app


def create_app(settings: Settings | None = None) -> Any:
    """The whole server as one ASGI app; `settings` default to load_settings()."""
    settings = settings or load_settings()
    services = Services.build(settings)
    set_compression(settings.websocket_compression)
    realtime = Realtime(services)
    quart_app = create_quart(services, realtime)
    asgi = socketio.ASGIApp(realtime.sio, other_asgi_app=quart_app, socketio_path="socket.io")
    app = TrustedProxies(limit_requests(asgi, settings), parse_networks(settings.trusted_proxies))
    app.services = services  # type: ignore[attr-defined]
    app.realtime = realtime  # type: ignore[attr-defined]
    return app
