"""Rate limits, kept by the `limits` library: in memory for one process, in Redis for many.

With `redis_url` set every worker and node counts against the same windows,
so `messages_per_10s = 20` means 20 for the user, not 20 per process. A
broker that does not answer within STORAGE_TIMEOUT seconds lets the event
through (and logs it): chat keeps working while Redis is away.
"""

from __future__ import annotations

import logging
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)
STORAGE_TIMEOUT = 0.5  # seconds


def limits_storage(redis_url: str, prefix: str) -> Storage:
    """Redis storage (through redis-py) when a URL is given, else this process's memory."""
    if not redis_url:
        return MemoryStorage()
    return RedisStorage(
        "async+" + redis_url,
        implementation="redispy",
        key_prefix=f"{prefix}:limits",
        socket_timeout=STORAGE_TIMEOUT,
        socket_connect_timeout=STORAGE_TIMEOUT,
    )


class Window:
    """At most `amount` hits per key within any `seconds`-long moving window."""

    def __init__(self, storage: Storage, amount: int, seconds: int, name: str) -> None:
        self.item: RateLimitItem = RateLimitItemPerSecond(amount, seconds, namespace=name)
        self._limiter = MovingWindowRateLimiter(storage)
        self.name = name

    async def hit(self, key: str) -> float:
        """Count one hit; 0.0 when it is allowed, else the seconds until one more would be."""
        try:
            if await self._limiter.hit(self.item, key):
                return 0.0
            stats = await self._limiter.get_window_stats(self.item, key)
        except Exception:  # the shared storage is away: allow rather than stop the chat
            log.warning("rate limit %s: storage unavailable; allowing", self.name, exc_info=True)
            return 0.0
        return max(0.001, stats.reset_time - time.time())

    async def room(self, key: str) -> tuple[int, float]:
        """(hits the window still takes, seconds until it takes one more) without counting."""
        try:
            stats = await self._limiter.get_window_stats(self.item, key)
        except Exception:
            log.warning("rate limit %s: storage unavailable; allowing", self.name, exc_info=True)
            return self.item.amount, 0.0
        return stats.remaining, max(0.001, stats.reset_time - time.time())

    async def clear(self, key: str) -> None:
        """Forget every hit of the key."""
        try:
            await self._limiter.clear(self.item, key)
        except Exception:
            log.warning("rate limit %s: storage unavailable; not cleared", self.name, exc_info=True)
