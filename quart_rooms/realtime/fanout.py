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

from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet
from socketio.async_pubsub_manager import AsyncPubSubManager


def is_local(sio: socketio.AsyncServer) -> bool:
    """True when this process holds every socket (no pub/sub manager)."""
    return not isinstance(sio.manager, AsyncPubSubManager)


async def broadcast(sio: socketio.AsyncServer, event: str, data: Any, room: str, namespace: str = "/") -> None:
    """Emit `event` with `data` to every socket in `room`, in call order per socket."""
    if not is_local(sio):
        await sio.emit(event, data, to=room, namespace=namespace)
        return
    encoded = sio.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, data]).encode()
    if isinstance(encoded, list):  # binary attachments: let the manager handle them
        await sio.emit(event, data, to=room, namespace=namespace)
        return
    pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
    sockets = sio.eio.sockets
    for _sid, eio_sid in sio.manager.get_participants(namespace, room):
        socket = sockets.get(eio_sid)
        if socket is not None and not socket.closed:
            socket.queue.put_nowait(pkt)
