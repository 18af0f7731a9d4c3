"""A dict filled by an async loader, loading each key once even under a burst of callers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LoadOnce(Generic[K, V]):
    """Values by key; concurrent misses of one key share a single load.

    Twenty sockets joining the same room at once cost one query, not twenty.
    `clear()` drops every value, and a load that was under way when it was
    called answers its own callers but is not kept.
    """

    def __init__(self) -> None:
        self._values: dict[K, V] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The value of `key`, loading it with `load()` unless it is known or being loaded."""
        if key in self._values:
            return self._values[key]
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(load())
            self._loading[key] = pending
            pending.add_done_callback(lambda done: self._settle(key, done))
        return await asyncio.shield(pending)

    def _settle(self, key: K, done: asyncio.Future[V]) -> None:
        if self._loading.get(key) is not done:  # dropped by clear() or discard() meanwhile
            return
        del self._loading[key]
        if not done.cancelled() and done.exception() is None:
            self._values[key] = done.result()

    def discard(self, key: K) -> None:
        """Forget one key; a load of it under way is not kept."""
        self._values.pop(key, None)
        self._loading.pop(key, None)

    def clear(self) -> None:
        """Forget every value; loads under way are not kept."""
        self._values.clear()
        self._loading.clear()
