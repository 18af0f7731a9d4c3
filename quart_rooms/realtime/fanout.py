"""Delivery to this process's sockets: one encode per event, no task per recipient, no suspension.

python-socketio's manager creates an asyncio task for every recipient of every
broadcast and waits for them all. An Engine.IO socket's send only puts the
packet on that socket's queue (its writer task does the I/O, for websocket
and polling alike), so putting the one encoded packet on each queue directly
gives the same order and delivery for a fraction of the cost. Both functions
return without suspending: the room feeds rely on that to cut a join's
history exactly. This reaches into python-engineio (`Server.sockets`,
`AsyncSocket.queue`, `closed`) and python-socketio (`packet_class`,
`manager.get_participants`, `manager.eio_sid_from_sid`); tests/test_reach_ins.py
fails loudly when an upgrade changes them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

NAMESPACE = "/"


def _packet(sio: socketio.AsyncServer, event: str, data: Any) -> eio_packet.Packet:
    encoded = sio.packet_class(sio_packet.EVENT, namespace=NAMESPACE, data=[event, data]).encode()
    if isinstance(encoded, list):  # binary attachments: never made by this server
        raise ValueError("binary event data is not supported here")
    return eio_packet.Packet(eio_packet.MESSAGE, encoded)


def deliver(sio: socketio.AsyncServer, event: str, data: Any, room: str, *, skip: Collection[str] = ()) -> int:
    """Emit `event` with `data` to every local socket in Socket.IO room `room` but the `skip` sids;
    how many sockets got it."""
    pkt = _packet(sio, event, data)
    sockets = sio.eio.sockets
    sent = 0
    for sid, eio_sid in sio.manager.get_participants(NAMESPACE, room):
        if sid in skip:
            continue
        socket = sockets.get(eio_sid)
        if socket is not None and not socket.closed:
            socket.queue.put_nowait(pkt)
            sent += 1
    return sent


def send(sio: socketio.AsyncServer, sid: str, event: str, data: Any) -> None:
    """Emit `event` with `data` to one local socket (nothing if it is gone)."""
    eio_sid = sio.manager.eio_sid_from_sid(sid, NAMESPACE)
    socket = sio.eio.sockets.get(eio_sid) if eio_sid else None
    if socket is not None and not socket.closed:
        socket.queue.put_nowait(_packet(sio, event, data))
