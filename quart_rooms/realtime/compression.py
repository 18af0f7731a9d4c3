"""Whether Hypercorn may agree to permessage-deflate with a websocket client.

Hypercorn accepts permessage-deflate whenever a client offers it (browsers
always do): the extension is hard-coded in its handshake. For a chat's short
messages compression saves little and costs much: about twice the server CPU
per delivered message and 147 KiB instead of 37 KiB per idle connection
(docs/benchmarks.md). With `websocket_compression = false` (the default) the
handshake ignores the client's extension offers, so the connection runs
uncompressed; clients are fine with that, since the extension is optional.
"""

from __future__ import annotations

from typing import Any

from hypercorn.protocol import ws_stream

_original_init = ws_stream.Handshake.__init__
_refuse = False


def _init(self: ws_stream.Handshake, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    if _refuse:
        self.extensions = None  # as if the client had offered none


def set_compression(allowed: bool) -> None:
    """Let Hypercorn's websocket handshakes in this process negotiate compression, or not."""
    global _refuse
    _refuse = not allowed
    if ws_stream.Handshake.__init__ is not _init:
        ws_stream.Handshake.__init__ = _init  # type: ignore[method-assign]
