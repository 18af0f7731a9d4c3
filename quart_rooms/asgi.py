"""The ASGI entry point for Hypercorn workers: `hypercorn quart_rooms.asgi:app`."""

from quart_rooms.app import create_app

app = create_app()
