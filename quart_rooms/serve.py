"""The Hypercorn configuration of the server, with the limits that protect it.

`quart-rooms serve` and the tests build their Hypercorn `Config` here, so
tests run with the limits production runs with. What each knob guards:

- `websocket_max_message_size`: Hypercorn buffers a whole websocket message
  before the app sees it (16 MiB by default), before Engine.IO's own packet
  limit is looked at and before any token is shown; it is set to
  `max_socket_packet_bytes`. (`quart_rooms.request_limits` also makes Hypercorn
  stop buffering and drop the connection at that point.)
- `h11_max_incomplete_size`, `h2_max_header_list_size`: the request line and
  headers one request may send (HTTP/1.1: answered 431 beyond it).
- `read_timeout`: seconds a connection may stay silent (Hypercorn has none by
  default). A body that trickles in is stopped by `body_timeout` in
  `quart_rooms.request_limits`, since every byte resets `read_timeout`.

Request bodies are not buffered by Hypercorn (it hands them to the app in
chunks of at most 64 KiB through a queue of `max_app_queue_size` chunks);
their limits are applied by `quart_rooms.request_limits`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import ssl
import tempfile
import time
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from typing import Any

from hypercorn.config import Config, Sockets

from quart_rooms.logs import ACCESS_FORMAT, ACCESS_LOGGER
from quart_rooms.metrics import MULTIPROCESS_ENV
from quart_rooms.settings import Settings
from quart_rooms.tasks import within

APPLICATION_PATH = "quart_rooms.asgi:app"
HEADER_BYTES = 16 * 1024  # request line + headers; a JWT and a refresh cookie take about 1 KiB
H2_FRAME_BYTES = 2**14  # the smallest maximum frame size RFC 9113 section 4.2 allows
H2_STREAMS = 100  # concurrent HTTP/2 streams per connection
LISTEN_BACKLOG = 2048  # connections the kernel queues before the app accepts them
GRACEFUL_TIMEOUT = 5  # seconds in-flight requests get when the server stops


def bind_address(host: str, port: int) -> str:
    """Hypercorn's bind string for `host` and `port` (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(settings: Settings, *, host: str, port: int, workers: int = 1) -> Config:
    """Hypercorn's Config for serving `quart_rooms.asgi:app` on `host`:`port` with `workers` processes.

    Limits come from `settings`: `read_timeout` (seconds of silence before a
    connection is closed) and `max_socket_packet_bytes` (the largest websocket
    message Hypercorn will buffer, in bytes). Logs: Hypercorn's error and
    access loggers (`access_log`) write through the app's logging
    (quart_rooms.logs). The event loop (worker_class) is left to the caller.
    """
    config = Config()
    config.bind = [bind_address(host, port)]
    config.workers = workers
    # Hypercorn listens with a backlog of 100: after a restart every page comes back at once and
    # the kernel would drop the rest (clients retry SYNs after 1, 3, 7 s). The kernel caps it at
    # net.core.somaxconn.
    config.backlog = LISTEN_BACKLOG
    config.application_path = APPLICATION_PATH
    config.read_timeout = settings.read_timeout
    config.websocket_max_message_size = settings.max_socket_packet_bytes
    config.h11_max_incomplete_size = HEADER_BYTES
    config.h2_max_header_list_size = HEADER_BYTES
    config.h2_max_inbound_frame_size = H2_FRAME_BYTES
    config.h2_max_concurrent_streams = H2_STREAMS
    # Hypercorn's loggers go through the app's handler (quart_rooms.logs): one format everywhere.
    config.accesslog = logging.getLogger(ACCESS_LOGGER) if settings.access_log else None
    config.access_log_format = ACCESS_FORMAT
    config.errorlog = logging.getLogger("hypercorn.error")
    config.loglevel = settings.log_level
    # In-flight requests get what is left of shutdown_timeout after the app drained (app.Realtime.stop).
    config.graceful_timeout = min(GRACEFUL_TIMEOUT, settings.shutdown_timeout * 0.3)
    return config


# Running: one process, or a supervisor with workers ------------------------------------
#
# Hypercorn's own `run()` starts even one worker as a child process, stops every worker
# when one dies, and tells the app nothing until its connections are gone. `serve` runs
# Hypercorn's worker loop itself (`worker_serve`, with a shutdown trigger of its own), so:
# - one worker runs in the `serve` process (nothing is left behind if it is killed);
# - on SIGTERM or SIGINT the app first drains (refuses new sockets, stores what it
#   accepted, closes its sockets so clients reconnect), then Hypercorn stops;
# - with several workers a supervisor starts a new worker when one dies, so the other
#   keeps serving and the port stays open (crash loops stop it: see MAX_RESTARTS).

MAX_RESTARTS = 5  # worker restarts within RESTART_WINDOW seconds before the supervisor gives up
RESTART_WINDOW = 60.0
log = logging.getLogger(__name__)


def serve(config: Config, settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a clean stop, 1 when workers keep dying."""
    if config.workers <= 1:
        _worker(config)
        return 0
    return _supervise(config, settings)


def _worker(config: Config, sockets: Sockets | None = None, shutdown_event: EventType | None = None) -> None:
    """One worker process: load the app, serve it, drain it on a stop signal (or the supervisor's event)."""
    from hypercorn.app_wrappers import ASGIWrapper
    from hypercorn.asyncio.run import worker_serve

    from quart_rooms import (
        asgi,  # builds the app (and this process's logging) from the settings
    )

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if config.worker_class == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    app = asgi.app

    async def main() -> None:
        trigger = partial(_stop_requested, app, shutdown_event)
        await worker_serve(ASGIWrapper(app), config, sockets=sockets, shutdown_trigger=trigger)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.get_loop().set_exception_handler(_exception_handler)
        runner.run(main())


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's handler, quiet about what is no error: a connection cancelled as the server stops
    (asyncio's stream callback reports its CancelledError), and TLS handshakes that fail."""
    exception = context.get("exception")
    if isinstance(exception, (asyncio.CancelledError, ssl.SSLError)):
        log.debug("ignored: %s", context.get("message"))
        return
    loop.default_exception_handler(context)


async def _stop_requested(app: Any, shutdown_event: EventType | None) -> None:
    """Hypercorn's shutdown trigger: wait for a stop signal, drain the app, then let Hypercorn stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    while not stop.is_set() and not (shutdown_event is not None and shutdown_event.is_set()):
        try:
            await within(0.1, stop.wait())
        except TimeoutError:
            pass
    log.info("stopping: closing sockets and storing the messages accepted")
    await app.realtime.stop()


def _supervise(config: Config, settings: Settings) -> int:
    """Start `config.workers` workers on shared sockets; replace any that dies until told to stop."""
    multiproc = tempfile.mkdtemp(prefix="quart-rooms-metrics-")
    os.environ[MULTIPROCESS_ENV] = multiproc  # the workers inherit it: metrics add up over workers
    ctx = multiprocessing.get_context("spawn")
    sockets = config.create_sockets()
    shutdown_event = ctx.Event()
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True
        shutdown_event.set()

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workers inherit this; they stop on the event
    workers = [_start(ctx, config, sockets, shutdown_event) for _ in range(config.workers)]
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    restarts: list[float] = []
    code = 0
    try:
        while not stopping:
            wait([w.sentinel for w in workers], timeout=1.0)
            for index, worker in enumerate(workers):
                if worker.exitcode is None or stopping:
                    continue
                _forget(worker)
                now = time.monotonic()
                restarts = [t for t in restarts if t > now - RESTART_WINDOW] + [now]
                if len(restarts) > MAX_RESTARTS:
                    log.error("workers died %d times within %.0f s; stopping", len(restarts), RESTART_WINDOW)
                    code = 1
                    stop()
                    break
                log.warning("worker %s exited with code %s; starting another", worker.pid, worker.exitcode)
                workers[index] = _start(ctx, config, sockets, shutdown_event)
        deadline = time.monotonic() + settings.shutdown_timeout + GRACEFUL_TIMEOUT
        for worker in workers:
            worker.join(max(0.1, deadline - time.monotonic()))
        for worker in workers:
            if worker.is_alive():
                log.warning("worker %s did not stop in time; killing it", worker.pid)
                worker.kill()
                worker.join()
    finally:
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            sock.close()
        shutil.rmtree(multiproc, ignore_errors=True)
    return code


def _start(ctx: Any, config: Config, sockets: Sockets, shutdown_event: EventType) -> BaseProcess:
    process: BaseProcess = ctx.Process(
        target=_worker, kwargs={"config": config, "sockets": sockets, "shutdown_event": shutdown_event}
    )
    process.start()
    return process


def _forget(worker: BaseProcess) -> None:
    """A dead worker's live gauges no longer count (prometheus-client multiprocess mode)."""
    from prometheus_client import multiprocess

    if worker.pid is not None:
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
    worker.join()
