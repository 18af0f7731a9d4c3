"""Work that must finish once begun, even when the request that began it is cancelled.

Quart cancels a request handler when its client goes away. A change that is
committed must still take effect (a revoke must still kick), so use cases
that change state run as tasks owned here: the handler awaits a shield of
the task, and a cancelled handler leaves the task running. Shutdown waits
for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class OwnedTasks:
    """Tasks the app owns: started by requests, finished regardless of them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` to the end in a task of its own; its result or error, unless the caller is cancelled."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for every task under way."""
        pending = set(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=timeout)


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """`awaitable`'s result, or TimeoutError after `seconds`.

    asyncio.wait_for on Python 3.11 may drop a cancellation of the caller that
    lands in the same turn as the awaitable finishes, leaving a background task
    that cannot be stopped; asyncio.timeout never does.
    """
    async with asyncio.timeout(seconds):
        return await awaitable
