"""Broadcast to a room with one encode and no task per recipient.

python-socketio's local manager creates an asyncio task for every recipient
of every broadcast and waits for them all. An Engine.IO socket's send only
puts the packet on that socket's unbounded queue (its writer task does the
actual I/O), so putting the one encoded packet on each queue directly gives
the same order and delivery for a fraction of the cost. With a pub/sub
manager (Redis) the manager's own emit is kept, since it also publishes to
the other servers.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet
from socketio.async_pubsub_manager import AsyncPubSubManager


def is_local(sio: socketio.AsyncServer) -> bool:
    """True when this process holds every socket (no pub/sub manager)."""
    return not isinstance(sio.manager, AsyncPubSubManager)


async def broadcast(
    sio: socketio.AsyncServer,
    event: str,
    data: Any,
    room: str,
    *,
    skip: Collection[str] = (),
    namespace: str = "/",
) -> None:
    """Emit `event` with `data` to every socket in `room` but the `skip` sids, in call order per socket."""
    encoded = sio.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, data]).encode()
    if not is_local(sio) or isinstance(encoded, list):  # other servers, or binary attachments
        await sio.emit(event, data, to=room, skip_sid=list(skip), namespace=namespace)
        return
    pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
    sockets = sio.eio.sockets
    for sid, eio_sid in sio.manager.get_participants(namespace, room):
        if sid in skip:
            continue
        socket = sockets.get(eio_sid)
        if socket is not None and not socket.closed:
            socket.queue.put_nowait(pkt)
