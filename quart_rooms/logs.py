"""Logging: one format in every process (the `serve` parent and each worker), text or JSON.

`log_format = "text"` writes `time level logger: message`; `"json"` writes one
JSON object per line (python-json-logger) with `time`, `level`, `logger`,
`message`, `process` and any extra fields. The access log (one line per HTTP
request and websocket) is Hypercorn's, routed through the same handler; it
logs the path without the query string, which for Engine.IO holds session ids.
Nothing logs tokens or passwords (tests/test_logs.py greps for them).
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from quart_rooms.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
# Hypercorn's access-log atoms: client, method, path (no query), protocol, status, bytes, microseconds.
ACCESS_FORMAT = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(D)sus'
ACCESS_LOGGER = "quart_rooms.access_log"  # not quart_rooms.access: that is the access rules module


def configure_logging(settings: Settings) -> None:
    """Send every logger's records to standard error in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        ))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    access = logging.getLogger(ACCESS_LOGGER)
    access.setLevel(logging.INFO if settings.access_log else logging.WARNING)
