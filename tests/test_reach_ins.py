"""Guards for the places that reach into a library's internals: an upgrade that breaks one fails here.

pyproject.toml caps python-socketio, python-engineio and Hypercorn at the minor
versions these were written against; raising a cap means making this file pass.
"""

from __future__ import annotations

import asyncio
import inspect

import socketio
from hypercorn.protocol import ws_stream

from quart_rooms.realtime import fanout
from tests.helpers import Api, Chatter, Server


def test_socketio_manager_room_methods_are_synchronous() -> None:
    """realtime/hub.py enters and leaves rooms with the manager's basic_* methods, without suspending
    (the join cut in chat/feed.py depends on it)."""
    manager = socketio.AsyncManager()
    for name in ("basic_enter_room", "basic_leave_room", "get_participants", "eio_sid_from_sid", "is_connected"):
        method = getattr(manager, name)
        assert callable(method) and not inspect.iscoroutinefunction(method), name


def test_server_handlers_that_chat_server_overrides_keep_their_signatures() -> None:
    """realtime/server.py overrides python-socketio's _handle_eio_connect(eio_sid, environ),
    _handle_eio_message(eio_sid, data), _handle_connect(eio_sid, namespace, data) and
    _handle_disconnect(eio_sid, namespace, reason)."""
    expected = {
        "_handle_eio_connect": ["self", "eio_sid", "environ"],
        "_handle_eio_message": ["self", "eio_sid", "data"],
        "_handle_connect": ["self", "eio_sid", "namespace", "data"],
        "_handle_disconnect": ["self", "eio_sid", "namespace", "reason"],
    }
    for name, parameters in expected.items():
        method = getattr(socketio.AsyncServer, name)
        assert inspect.iscoroutinefunction(method), name
        assert list(inspect.signature(method).parameters)[: len(parameters)] == parameters, name
    # A duplicate CONNECT is what pre_connect refuses (the override answers it first).
    assert "ValueDuplicationError" in inspect.getsource(socketio.base_manager.BaseManager.pre_connect)


def test_server_disconnect_is_pending_before_the_handler_runs() -> None:
    """realtime/namespace.py tells the server's own `disconnect` from a client's event named so by
    is_connected() being False while the handler runs (pre_disconnect)."""
    source = inspect.getsource(socketio.AsyncServer._handle_disconnect)
    assert source.index("pre_disconnect") < source.index("_trigger_event('disconnect'")
    events = inspect.getsource(socketio.AsyncServer._handle_event)
    assert "is_connected(sid, namespace)" in events  # client events of a leaving socket are dropped


def test_hypercorn_handshake_keeps_the_offer_in_extensions() -> None:
    """realtime/compression.py clears Handshake.extensions to refuse permessage-deflate."""
    source = inspect.getsource(ws_stream.Handshake.__init__)
    assert "self.extensions" in source
    assert "PerMessageDeflate" in inspect.getsource(ws_stream)


async def test_fanout_puts_packets_on_engineio_queues(server: Server, admin_api: Api) -> None:
    """realtime/fanout.py puts one encoded packet on each socket's Engine.IO queue; the client gets it."""
    chatter = Chatter(server.url)
    try:
        await chatter.connect(await admin_api.token_for("admin", server.admin_password))
        await chatter.wait_for("welcome")
        sio = server.app.realtime.sio  # type: ignore[attr-defined]
        [sid] = [s.sid for s in server.app.realtime.hub.sockets.all()]  # type: ignore[attr-defined]
        eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
        socket = sio.eio.sockets[eio_sid]
        assert isinstance(socket.queue, asyncio.Queue) and socket.closed is False
        fanout.send(sio, sid, "probe", {"n": 1})
        assert await chatter.wait_for("probe") == [{"n": 1}]
    finally:
        await chatter.close()


def test_hypercorn_websocket_buffer_has_what_request_limits_patches() -> None:
    """request_limits.bound_websocket_messages() wraps WebsocketBuffer.extend and WSStream._handle_events
    and relies on the buffer's length, max_length and clear(), and on FrameTooLargeError."""
    buffer = ws_stream.WebsocketBuffer(10)
    assert buffer.length == 0 and buffer.max_length == 10 and callable(buffer.clear)
    assert inspect.iscoroutinefunction(ws_stream.WSStream._handle_events)
    assert issubclass(ws_stream.FrameTooLargeError, Exception)
    module = inspect.getsource(ws_stream)  # the methods may be patched in this process already
    assert "self.buffer.extend(event)" in module and "except FrameTooLargeError" in module


def test_hypercorn_worker_serve_takes_a_shutdown_trigger() -> None:
    """serve.py runs Hypercorn's worker loop with sockets and a shutdown trigger of its own."""
    from hypercorn.asyncio.run import worker_serve

    parameters = inspect.signature(worker_serve).parameters
    assert {"app", "config", "sockets", "shutdown_trigger"} <= set(parameters)
