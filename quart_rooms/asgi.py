"""The ASGI entry point for Hypercorn workers: `hypercorn quart_rooms.asgi:app`."""

from quart_rooms.app import create_app
from quart_rooms.logs import configure_logging
from quart_rooms.settings import load_settings

settings = load_settings()
configure_logging(settings)  # a worker process starts with no logging set up
app = create_app(settings)
