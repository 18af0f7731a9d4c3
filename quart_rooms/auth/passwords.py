"""Password hashing with argon2id at OWASP's recommended parameters, off the event loop.

An argon2id hash with m = 19 MiB, t = 2 costs tens of milliseconds of CPU. On
the event loop that would stall every socket, so hashing and verifying run in
a thread pool sized to the machine's cores (argon2-cffi releases the GIL while
it hashes). A burst beyond `max_pending` waiting checks is refused with
RateLimited instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from quart_rooms.errors import RateLimited

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024

# OWASP (2024): argon2id, m=19 MiB, t=2, p=1 as the minimum.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, type=Type.ID)


@cache
def _dummy_hash() -> str:
    """Verifying against this when the account does not exist keeps the reply time the same,
    so timing does not tell which usernames exist (made on first use, not at import)."""
    return _hasher.hash("quart-rooms-no-such-user")


def hash_password(password: str) -> str:
    """The argon2id hash of a password (blocking: tens of ms of CPU)."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when the password matches; a missing hash costs the same time and fails (blocking)."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than the current ones."""
    return _hasher.check_needs_rehash(password_hash)


class Passwords:
    """Hashes and verifies passwords in a thread pool, one thread per core."""

    def __init__(self, *, max_pending: int, threads: int | None = None) -> None:
        self.threads = threads or os.cpu_count() or 1
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="argon2")
        self._pending = 0

    async def _run(self, func: Callable[..., object], *args: object) -> object:
        if self._pending >= self.max_pending:
            raise RateLimited("The server is busy checking passwords; try again in a moment.", retry_after=1)
        loop = asyncio.get_running_loop()
        self._pending += 1
        job = self._pool.submit(func, *args)
        # Counted until the thread is done with it, even when the caller (its client gone) stops waiting.
        job.add_done_callback(lambda _: self._release(loop))
        return await asyncio.wrap_future(job)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.call_soon_threadsafe(self._done_one)
        except RuntimeError:  # the loop is closed: nobody counts any more
            pass

    def _done_one(self) -> None:
        self._pending -= 1

    async def hash(self, password: str) -> str:
        """The argon2id hash of a password; RateLimited when too many checks wait."""
        return str(await self._run(hash_password, password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when the password matches (see verify_password); RateLimited when too many checks wait."""
        return bool(await self._run(verify_password, password_hash, password))

    def close(self) -> None:
        """Stop the threads once their work is done."""
        self._pool.shutdown(wait=False, cancel_futures=True)
