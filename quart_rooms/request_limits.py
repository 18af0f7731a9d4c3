"""Request limits at the ASGI edge, applied before anything buffers a request.

`RequestLimits` sits in front of the whole app (Engine.IO polling and Quart
alike). For every HTTP request it:

- refuses `Content-Length` together with `Transfer-Encoding` with 400 (RFC 9112
  section 6.3: such a message is an error, and the connection is closed after
  the response);
- refuses a declared `Content-Length` over the route's limit with 413 at once,
  without reading the body: `max_socket_packet_bytes` under `/socket.io/`
  (Engine.IO compares a whole polling POST with that limit too), else
  `max_body_bytes`;
- reads the body itself, counting bytes as they arrive (a chunked body that
  runs past the limit gets 413) and within `body_timeout` seconds (a body that
  trickles in gets 408; Hypercorn's `read_timeout` restarts with every byte);
- hands the app the body it read, so the app never waits on the client.

Every refusal carries `Connection: close` (HTTP/1.x) and Hypercorn closes the
connection once it is sent, so a refused client holds no socket. Every
response, Engine.IO polling replies included, gets `X-Content-Type-Options:
nosniff`. Error bodies have the API's shape `{"error": {"code", "message"}}`
(see `quart_rooms/errors.py` and the contract).

Hypercorn buffers websocket messages itself, before the app sees them;
`bound_websocket_messages` makes it stop at `websocket_max_message_size` and
drop the connection (see `quart_rooms/serve.py` for that setting).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import StreamClosed

from quart_rooms.errors import AppError, BadRequest, PayloadTooLarge
from quart_rooms.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SOCKET_PATH = "/socket.io/"  # where Engine.IO is served (quart_rooms/app.py)
NOSNIFF = (b"x-content-type-options", b"nosniff")
_RESPONSE_STARTS = {"http.response.start", "websocket.http.response.start"}


class RequestTimeout(AppError):
    code, status, default_message = "request_timeout", 408, "The request body did not arrive in time."


class _ClientGone(Exception):
    """The client disconnected before its body was complete: there is nobody to answer."""


class _BodyTooLarge(Exception):
    """More body bytes arrived than the route allows."""


@dataclass(frozen=True)
class Limits:
    """The limits one server applies: sizes in bytes, the body deadline in seconds."""

    body_bytes: int
    socket_packet_bytes: int
    body_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """`max_body_bytes`, `max_socket_packet_bytes` and `body_timeout` from the settings."""
        return cls(settings.max_body_bytes, settings.max_socket_packet_bytes, settings.body_timeout)

    def body_limit(self, path: str) -> int:
        """The largest body, in bytes, a request to `path` may send."""
        if (path if path.endswith("/") else path + "/").startswith(SOCKET_PATH):
            return self.socket_packet_bytes  # the same limit Engine.IO applies to a polling POST
        return self.body_bytes


class RequestLimits:
    """ASGI middleware applying `Limits` to every HTTP request before the app reads it.

    `services` is the wrapped app's `services` attribute (None if it has none),
    so callers of `create_app()` still find it on the returned app.
    """

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.services: Any = getattr(app, "services", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        send = with_nosniff(send)
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        limit = self.limits.body_limit(scope["path"])
        refusal = framing_refusal(scope["headers"], limit)
        if refusal is not None:
            await refuse(refusal, scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                body = await read_body(receive, limit)
        except _ClientGone:
            return
        except _BodyTooLarge:
            await refuse(PayloadTooLarge(), scope, receive, send)
            return
        except TimeoutError:
            await refuse(RequestTimeout(), scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)


def limit_requests(app: ASGIApp, settings: Settings) -> RequestLimits:
    """`app` behind `RequestLimits` with the limits in `settings`; also bounds Hypercorn's websocket buffering."""
    bound_websocket_messages()
    return RequestLimits(app, Limits.from_settings(settings))


def framing_refusal(headers: Iterable[tuple[bytes, bytes]], limit: int) -> AppError | None:
    """The error for a request whose headers alone disqualify it, or None.

    `headers` are the ASGI scope's (lower-case names); `limit` is the route's
    body limit in bytes. Content-Length with Transfer-Encoding is refused (RFC
    9112 section 6.3, item 3: a request smuggling vector); so is a
    Content-Length that is not one decimal number (section 6.3, item 5) or is
    over `limit`.
    """
    names = [(name.lower(), value) for name, value in headers]
    lengths = [value for name, value in names if name == b"content-length"]
    if lengths and any(name == b"transfer-encoding" for name, _ in names):
        return BadRequest("A request may not have both Content-Length and Transfer-Encoding.")
    declared = {part.strip() for value in lengths for part in value.split(b",")}
    if not declared:
        return None
    if len(declared) > 1 or not all(value.isdigit() for value in declared):
        return BadRequest("The Content-Length header is not valid.")
    if int(declared.pop()) > limit:
        return PayloadTooLarge()
    return None


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body from `receive`, at most `limit` bytes.

    Raises _BodyTooLarge as soon as more than `limit` bytes have arrived, and
    _ClientGone when the client disconnects first.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientGone()
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable giving `body` as one `http.request` message, then what `receive` gives."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def with_nosniff(send: Send) -> Send:
    """A send callable adding `X-Content-Type-Options: nosniff` to every response that lacks it."""

    async def sender(message: Message) -> None:
        if message["type"] in _RESPONSE_STARTS:
            headers = list(message.get("headers", ()))
            if not any(name.lower() == NOSNIFF[0] for name, _ in headers):
                message = {**message, "headers": [*headers, NOSNIFF]}
        await send(message)

    return sender


async def refuse(error: AppError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer `error` in the API's JSON shape and make the server close the connection.

    `Connection: close` (HTTP/1.x only; HTTP/2 ends just the stream) makes
    Hypercorn close the socket after the response. Meanwhile the rest of the
    body is read and dropped: Hypercorn queues body chunks for the app (10 at
    most) and, when the response ends, waits for room in that queue to post
    `http.disconnect`, so a full queue nobody reads would keep the socket open.
    """
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers().items()]
    if scope.get("http_version", "1.1") in ("1.0", "1.1"):
        headers.append((b"connection", b"close"))
    drain = asyncio.create_task(_discard(receive))
    try:
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
    finally:
        drain.cancel()  # the response is out and the stream closed: nothing more will be queued
        await asyncio.gather(drain, return_exceptions=True)


async def _discard(receive: Receive) -> None:
    """Read and drop request messages until the client disconnects."""
    while (await receive())["type"] == "http.request":
        pass


_TOO_LARGE_FLAG = "quart_rooms_too_large"


def bound_websocket_messages() -> None:
    """Make Hypercorn stop buffering a websocket message at `websocket_max_message_size` bytes.

    Hypercorn 0.18 checks that limit only after adding each received piece to
    its buffer, and after refusing it keeps the buffer and keeps adding what
    the client still sends, while it waits for the client's close reply: a
    client that sends one huge message holds all of it in server memory. With
    this patch a message over the limit is dropped before it is stored, the
    close frame 1009 (message too big, RFC 6455 section 7.4.1) is sent, and
    the connection is closed at once (RFC 6455 section 7.1.7, failing the
    connection). Idempotent; applies to this process.
    """
    buffer_class = ws_stream.WebsocketBuffer
    if getattr(buffer_class.extend, "_bounded", False):
        return
    original_extend = buffer_class.extend
    original_handle = ws_stream.WSStream._handle_events

    def extend(self: ws_stream.WebsocketBuffer, event: Any) -> None:
        if getattr(self, _TOO_LARGE_FLAG, False) or self.length + len(event.data) > self.max_length:
            self.clear()
            setattr(self, _TOO_LARGE_FLAG, True)
            raise ws_stream.FrameTooLargeError()
        original_extend(self, event)

    async def handle_events(self: ws_stream.WSStream) -> None:
        await original_handle(self)
        if getattr(self.buffer, _TOO_LARGE_FLAG, False) and not self.closed:
            await self.send(StreamClosed(stream_id=self.stream_id))

    extend._bounded = True  # type: ignore[attr-defined]
    buffer_class.extend = extend  # type: ignore[method-assign]
    ws_stream.WSStream._handle_events = handle_events  # type: ignore[method-assign]
