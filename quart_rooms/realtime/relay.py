"""Carries admin changes to every server process through Redis, so each one acts on its own sockets.

With several workers or nodes, the admin request lands on one process while
the affected sockets may live on any. Each `Notifier` call is published on
`<redis_channel>:admin`; every process (the sender included) hears it and runs
the same call on its own `Hub`, which kicks or disconnects the sockets it holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import redis.asyncio

from quart_rooms.realtime.hub import Hub

log = logging.getLogger(__name__)


class RedisNotifier:
    """A `Notifier` that relays each change to the `Hub` of every process."""

    def __init__(self, hub: Hub, url: str, channel: str) -> None:
        self._hub = hub
        self._channel = f"{channel}:admin"
        self._redis = redis.asyncio.Redis.from_url(url)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe, so this process hears every change; a broker that is down is retried, not fatal."""
        try:
            await asyncio.wait_for(self._pubsub.subscribe(self._channel), 2)
        except Exception:  # /readyz reports the broker; keep trying in the background
            log.warning("admin relay: cannot subscribe yet; retrying in the background")
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()

    async def _listen(self) -> None:
        while True:
            try:
                if not self._pubsub.subscribed:
                    await self._pubsub.subscribe(self._channel)
                async for message in self._pubsub.listen():
                    await self._apply(json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad message or a broken connection: log it, listen again
                log.warning("admin relay: listening failed; retrying", exc_info=True)
                await asyncio.sleep(1)

    async def _apply(self, change: dict[str, Any]) -> None:
        op, args = change["op"], change["args"]
        if op == "revoked":
            await self._hub.revoked(args[0], args[1])
        elif op == "room_deleted":
            await self._hub.room_deleted(args[0])
        elif op == "room_restricted":
            await self._hub.room_restricted(args[0], set(args[1]))
        elif op == "user_restricted":
            await self._hub.user_restricted(args[0], set(args[1]))
        elif op == "user_disabled":
            await self._hub.user_disabled(args[0])
        else:
            log.warning("admin relay: unknown change %r", op)

    async def _publish(self, op: str, *args: Any) -> None:
        change = {"op": op, "args": [sorted(a) if isinstance(a, set) else a for a in args]}
        try:
            await self._redis.publish(self._channel, json.dumps(change))
        except Exception:  # the broker is down: act here at least; other nodes re-check access per event
            log.exception("admin relay: publishing %s failed; applying it on this process only", op)
            await self._apply(change)

    async def revoked(self, username: str, room: str) -> None:
        await self._publish("revoked", username, room)

    async def room_deleted(self, room: str) -> None:
        await self._publish("room_deleted", room)

    async def room_restricted(self, room: str, keep: set[str]) -> None:
        await self._publish("room_restricted", room, keep)

    async def user_restricted(self, username: str, allowed: set[str]) -> None:
        await self._publish("user_restricted", username, allowed)

    async def user_disabled(self, username: str) -> None:
        await self._publish("user_disabled", username)
