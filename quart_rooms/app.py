"""The application factory: Quart for HTTP, python-socketio for live rooms, one ASGI app."""

from __future__ import annotations

import logging
from typing import Any

import socketio
from quart import Quart, request
from quart_schema import Info, QuartSchema

from quart_rooms import __version__
from quart_rooms.admin.routes import blueprint as admin_blueprint
from quart_rooms.api import errors
from quart_rooms.api.rooms import blueprint as rooms_blueprint
from quart_rooms.auth.routes import blueprint as auth_blueprint
from quart_rooms.health import blueprint as health_blueprint
from quart_rooms.realtime.compression import set_compression
from quart_rooms.realtime.events import ChatNamespace
from quart_rooms.realtime.hub import Hub
from quart_rooms.realtime.relay import RedisNotifier
from quart_rooms.realtime.server import BrokerCheck, create_server
from quart_rooms.services import Services
from quart_rooms.settings import Settings, load_settings
from quart_rooms.storage.db import migrate
from quart_rooms.storage.queries import StoredMessage
from quart_rooms.web.routes import blueprint as web_blueprint

log = logging.getLogger(__name__)


def create_quart(services: Services, hub: Hub, relay: RedisNotifier | None) -> Quart:
    """The Quart app with its routes; its lifespan opens storage, the writer and the relay."""
    app = Quart(__name__)
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.config["QUART_SCHEMA_CONVERT_CASING"] = False
    app.extensions["quart_rooms"] = services
    broker = BrokerCheck(services.settings.redis_url) if services.settings.redis_url else None
    services.broker_ping = broker.ping if broker else None
    QuartSchema(
        app,
        info=Info(title="quart-rooms", version=__version__),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}},
        security=[{"bearer": []}],
    )
    for blueprint in (auth_blueprint, rooms_blueprint, admin_blueprint, health_blueprint, web_blueprint):
        app.register_blueprint(blueprint)
    errors.register(app)

    async def deliver(message: StoredMessage) -> None:
        services.metrics.messages.inc()
        await hub.deliver(message)

    @app.before_serving
    async def _open() -> None:
        if services.settings.auto_migrate:
            await migrate(services.engine)
        services.chat.start(deliver)
        if relay is not None:
            await relay.start()

    @app.after_serving
    async def _close() -> None:
        if relay is not None:
            await relay.stop()
        await services.chat.stop()
        await services.engine.dispose()
        if broker is not None:
            await broker.close()

    @app.after_request
    async def _count(response: Any) -> Any:
        services.metrics.http_requests.labels(request.method, str(response.status_code)).inc()
        return response

    return app


def create_app(settings: Settings | None = None) -> socketio.ASGIApp:
    """The whole server as one ASGI app; `settings` default to load_settings()."""
    settings = settings or load_settings()
    services = Services.build(settings)
    set_compression(settings.websocket_compression)
    sio = create_server(settings)
    hub = Hub(sio)
    # One process: the hub acts at once. Several (Redis): every process's hub hears each change.
    relay = RedisNotifier(hub, settings.redis_url, settings.redis_channel) if settings.redis_url else None
    services.notifier = relay or hub
    sio.register_namespace(ChatNamespace(services, hub))
    quart_app = create_quart(services, hub, relay)
    asgi = socketio.ASGIApp(sio, other_asgi_app=quart_app, socketio_path="socket.io")
    asgi.services = services
    return asgi
