"""The benchmark's reference server: bare python-socketio on Hypercorn, no auth, no storage.

The tutorial's three events, acking like quart-rooms' wire contract so that one
load generator drives both servers:

- join {room} -> {ok, room, role, members: [], history: []}
- leave {room} -> {ok}
- message {room, msg} -> every socket in the room (the sender's included) gets
  `message` {id, room, user, msg, ts}, then the sender gets {ok, id, ts}

Run: python bench/reference_server.py --port 5901 [--loop uvloop]
It binds 127.0.0.1 only and serves in its own process (Hypercorn's worker loop,
no parent process), like `quart-rooms serve` with one worker; SIGTERM stops it
(Hypercorn's own handling: stop listening, give connections graceful_timeout).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any

import socketio

sio = socketio.AsyncServer(
    async_mode="asgi",
    cors_allowed_origins=None,
    always_connect=False,
    logger=False,
    engineio_logger=False,
)
app = socketio.ASGIApp(sio, socketio_path="socket.io")

_next_id: dict[str, int] = {}
ROOM_PREFIX = "room:"


def _room(data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("room"), str) and 0 < len(data["room"]) <= 64:
        return str(data["room"])
    return None


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    """Everyone may connect: the reference has no accounts."""


@sio.event
async def join(sid: str, data: Any = None) -> dict[str, Any]:
    room = _room(data)
    if room is None:
        return {"ok": False, "error": "bad_request"}
    await sio.enter_room(sid, ROOM_PREFIX + room)
    return {"ok": True, "room": room, "role": "write", "members": [], "history": []}


@sio.event
async def leave(sid: str, data: Any = None) -> dict[str, Any]:
    room = _room(data)
    if room is None:
        return {"ok": False, "error": "bad_request"}
    await sio.leave_room(sid, ROOM_PREFIX + room)
    return {"ok": True}


@sio.event
async def message(sid: str, data: Any = None) -> dict[str, Any]:
    room = _room(data)
    if room is None or not isinstance(data.get("msg"), str):
        return {"ok": False, "error": "bad_request"}
    # No await between taking the id and starting the emit, so ids reach the
    # room in order, as the tutorial's single-threaded server does.
    message_id = _next_id.get(room, 0) + 1
    _next_id[room] = message_id
    ts = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    await sio.emit("message", {"id": message_id, "room": room, "user": sid, "msg": data["msg"], "ts": ts},
                   to=ROOM_PREFIX + room)
    return {"ok": True, "id": message_id, "ts": ts}


def main(argv: list[str] | None = None) -> int:
    from hypercorn.config import Config
    from hypercorn.run import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5901)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                        help="event loop: Hypercorn's asyncio or uvloop worker class")
    args = parser.parse_args(argv)
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.workers = 0  # serve in this process, as `quart-rooms serve` runs one worker
    config.read_timeout = 60
    config.application_path = "reference_server:app"
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 5
    config.worker_class = args.loop
    print(f"reference server on http://127.0.0.1:{args.port}/", flush=True)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
