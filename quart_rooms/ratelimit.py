"""Rate limits, kept by the `limits` library: in memory for one process, in Redis for many.

With `redis_url` set every worker and node counts against the same windows,
so `messages_per_10s = 20` means 20 for the user, not 20 per process. When
Redis does not answer within STORAGE_TIMEOUT seconds the limits fall back to
this process's memory for BREAK seconds (a circuit breaker), so a stopped or
hung broker slows no event by more than one timeout, and chat keeps working,
limited per process meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from quart_rooms.breaker import Breaker

log = logging.getLogger(__name__)
STORAGE_TIMEOUT = 0.5  # seconds
T = TypeVar("T")


class LimitStore:
    """Where windows are counted: Redis (shared) when a URL is given, with this process's memory as fallback."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.shared: Storage | None = None
        if redis_url:
            self.shared = RedisStorage(
                "async+" + redis_url,
                implementation="redispy",
                key_prefix=f"{prefix}:limits",
                socket_timeout=STORAGE_TIMEOUT,
                socket_connect_timeout=STORAGE_TIMEOUT,
            )
        self.local: Storage = MemoryStorage()
        self._breaker = Breaker(log, "counting in this process")

    @property
    def use_shared(self) -> bool:
        """True unless there is no shared storage or it failed within the last BREAK seconds."""
        return self.shared is not None and self._breaker.usable

    def failed(self, exc: BaseException) -> None:
        """The shared storage failed: count in memory for BREAK seconds."""
        self._breaker.failed(exc)


class Window:
    """At most `amount` hits per key within any `seconds`-long moving window."""

    def __init__(self, store: LimitStore, amount: int, seconds: int, name: str) -> None:
        self.item: RateLimitItem = RateLimitItemPerSecond(amount, seconds, namespace=name)
        self.name = name
        self._store = store
        self._shared = MovingWindowRateLimiter(store.shared) if store.shared is not None else None
        self._local = MovingWindowRateLimiter(store.local)

    async def _run(self, call: Callable[[MovingWindowRateLimiter], Awaitable[T]]) -> T:
        if self._shared is not None and self._store.use_shared:
            try:
                return await call(self._shared)
            except Exception as exc:
                self._store.failed(exc)
        return await call(self._local)

    async def hit(self, key: str) -> float:
        """Count one hit; 0.0 when it is allowed, else the seconds until one more would be."""
        async def hit(limiter: MovingWindowRateLimiter) -> float:
            if await limiter.hit(self.item, key):
                return 0.0
            stats = await limiter.get_window_stats(self.item, key)
            return max(0.001, stats.reset_time - time.time())

        return await self._run(hit)

    async def room(self, key: str) -> tuple[int, float]:
        """(hits the window still takes, seconds until it takes one more) without counting."""
        async def room(limiter: MovingWindowRateLimiter) -> tuple[int, float]:
            stats = await limiter.get_window_stats(self.item, key)
            return stats.remaining, max(0.001, stats.reset_time - time.time())

        return await self._run(room)

    async def clear(self, key: str) -> None:
        """Forget every hit of the key."""
        async def clear(limiter: MovingWindowRateLimiter) -> None:
            await limiter.clear(self.item, key)

        await self._run(clear)
