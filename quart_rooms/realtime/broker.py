"""Wake-ups between server processes over Redis pub/sub; storage stays the record.

Every process publishes on one channel what the others should know soon:
committed messages (so their room feeds deliver them without reading
storage), new admin changes (so they read the change log now), presence
events, and a heartbeat. Nothing here is the record: a message lost by the
broker costs latency, since feeds fill gaps from storage and the change log
is polled.

The heartbeat tells whether the broker works end to end: each process
publishes its own every HEARTBEAT seconds and expects it back. When it has not
come back for DOWN_AFTER seconds (Redis stopped, hung, or unreachable) the
broker counts as down: `on_down` runs (the app polls storage quickly), and
when heartbeats return, `on_up` (the app catches up from storage at once).
Publishing never blocks the caller: messages go through a bounded queue to a
publisher task that gives each publish PUBLISH_TIMEOUT seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio
from redis.asyncio.client import PubSub

from quart_rooms.tasks import within

log = logging.getLogger(__name__)

HEARTBEAT = 0.5  # seconds between heartbeats
DOWN_AFTER = 1.5  # seconds without our own heartbeat before the broker counts as down
PUBLISH_TIMEOUT = 0.5  # seconds one publish may take
QUEUE_LIMIT = 10_000  # messages waiting to be published; beyond it the oldest are dropped
RETRY = 0.5  # seconds between reconnection attempts
OWNER_TTL = 60  # seconds a deployment's claim on its channel outlives its last process


class Broker:
    """A Redis pub/sub channel shared by every process of one deployment."""

    def __init__(
        self,
        url: str,
        channel: str,
        node: str,
        on_message: Callable[[dict[str, Any]], None],
        on_up: Callable[[], None],
        on_down: Callable[[], None],
    ) -> None:
        self._publisher = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=PUBLISH_TIMEOUT, socket_timeout=PUBLISH_TIMEOUT
        )
        # Pub/sub channels ignore the db number: put it in the name, so deployments on one Redis
        # server with their own db numbers (as the docs say) never hear each other.
        db = self._publisher.connection_pool.connection_kwargs.get("db", 0)
        self.channel = f"{channel}:{db}:wake"
        self._owner_key = f"{channel}:deployment"
        self.node = node
        self.deployment = ""  # set before start(): messages of other deployments are ignored
        self._on_message = on_message
        self._on_up = on_up
        self._on_down = on_down
        self._subscriber = redis.asyncio.Redis.from_url(url, socket_connect_timeout=PUBLISH_TIMEOUT)
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_heartbeat = 0.0
        self.healthy = False

    async def claim(self) -> None:
        """Make sure no other deployment uses this channel and db (RuntimeError if one does).

        Two deployments sharing a channel would share presence and rate-limit keys.
        A broker that does not answer is not fatal here (the nodes work without it).
        """
        try:
            owner = await within(PUBLISH_TIMEOUT * 4, self._keep_claim())
        except Exception as exc:
            log.warning("broker: cannot check who uses the channel (%s); going on", exc)
            return
        if owner != self.deployment:
            raise RuntimeError(
                f"redis_channel {self.channel.rsplit(':', 2)[0]!r} in this Redis db belongs to another deployment "
                "(another database): give this one its own redis_channel or Redis db number (the claim lapses "
                f"{OWNER_TTL} s after that deployment's last process stops)"
            )

    async def _keep_claim(self) -> str:
        """Claim the channel for this deployment, or renew its claim; the deployment that holds it."""
        await self._publisher.set(self._owner_key, self.deployment, nx=True, ex=OWNER_TTL)
        owner = await self._publisher.get(self._owner_key)
        owner = owner.decode() if isinstance(owner, bytes) else str(owner)
        if owner == self.deployment:
            await self._publisher.expire(self._owner_key, OWNER_TTL)
        return owner

    async def start(self) -> None:
        """Start listening, publishing and heartbeating; a broker that is away is retried, not fatal."""
        self._outbox = asyncio.Queue()
        self._last_heartbeat = time.monotonic()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(), name="broker-listen"),
            loop.create_task(self._publish_forever(), name="broker-publish"),
            loop.create_task(self._heartbeat(), name="broker-heartbeat"),
        ]

    async def stop(self) -> None:
        """Stop and close the connections."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._publisher.aclose()
        await self._subscriber.aclose()

    def publish(self, message: dict[str, Any]) -> None:
        """Queue a message for every other process (never blocks; dropped if the broker stays away)."""
        if self._outbox.qsize() >= QUEUE_LIMIT:
            self._outbox.get_nowait()  # storage has it; the others catch up when the broker returns
        message["n"] = self.node
        message["d"] = self.deployment
        self._outbox.put_nowait(json.dumps(message, separators=(",", ":")).encode())

    async def _publish_forever(self) -> None:
        failing = False
        while True:
            data = await self._outbox.get()
            try:
                await within(PUBLISH_TIMEOUT, self._publisher.publish(self.channel, data))
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:  # one line per outage, not per message
                    log.warning("broker: publishing failed (%s); the others catch up from storage", exc)
                failing = True

    async def _heartbeat(self) -> None:
        beats = 0
        while True:
            self.publish({"t": "h"})
            await asyncio.sleep(HEARTBEAT)
            beats += 1
            if beats % 10 == 0 and self.healthy:  # keep this deployment's claim on the channel
                try:
                    await within(PUBLISH_TIMEOUT, self._keep_claim())
                except Exception:
                    pass
            quiet = time.monotonic() - self._last_heartbeat
            if self.healthy and quiet > DOWN_AFTER:
                self.healthy = False
                log.warning("broker: no heartbeat for %.1f s; polling storage until it is back", quiet)
                self._on_down()

    async def _listen(self) -> None:
        subscribed_before = False
        while True:
            pubsub: PubSub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if subscribed_before:  # what was published while the subscription was gone is lost
                    log.info("broker: subscribed again; catching up from storage")
                    self._on_up()
                subscribed_before = True
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._received(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("broker: listening failed (%s); reconnecting", exc)
                await asyncio.sleep(RETRY)
            finally:
                try:
                    await within(PUBLISH_TIMEOUT, pubsub.aclose())  # type: ignore[no-untyped-call]
                except Exception:
                    pass

    def _received(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            kind, node, deployment = message["t"], message["n"], message["d"]
        except (ValueError, KeyError, TypeError):
            log.warning("broker: ignoring a malformed message")
            return
        if deployment != self.deployment:
            return  # another deployment on the same Redis server and channel
        if kind == "h":
            if node == self.node:
                self._last_heartbeat = time.monotonic()
                if not self.healthy:
                    self.healthy = True
                    log.info("broker: up")
                    self._on_up()
            return
        if node == self.node:
            return  # this process acted on its own messages already
        try:
            self._on_message(message)
        except Exception:
            log.exception("broker: handling a %r message failed", kind)

    async def ping(self) -> None:
        """Raise unless Redis answers PING (for /readyz)."""
        await within(PUBLISH_TIMEOUT * 4, self._publisher.ping())
