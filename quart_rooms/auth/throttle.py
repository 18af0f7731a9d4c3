"""Sign-in throttling: failed attempts per account and per client address (contract, "Command
line and settings": successes are never counted; 1.1: brute force stays throttled while a user
with no failures of their own signs in).

- Per account: an attempt is counted *before* its password is checked, and
  the count is cleared when it succeeds, so concurrent guesses cannot pass
  the check together.
- Per address: failures are counted once known, plus the attempts being
  checked on this process. The address limit applies only to accounts that
  have failures of their own: an office behind one address, or a sprayer's
  made-up names, never locks out a user who has not failed; a sprayer gets
  one guess per real account per window once the address is over its limit.

The windows live in the `limits` storage (Redis when configured), so every
worker and node counts together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from limits.aio.storage import Storage

from quart_rooms.errors import RateLimited
from quart_rooms.ratelimit import Window

MESSAGE = "Too many failed sign-ins; try again later."


@dataclass
class Attempt:
    """One sign-in attempt under way; set `succeeded` once the password matched."""

    succeeded: bool = False


class LoginThrottle:
    """Refuses sign-in attempts after too many recent failures."""

    def __init__(self, storage: Storage, *, per_account: int, per_address: int, window: int) -> None:
        self._account = Window(storage, per_account, window, "login-account")
        self._address = Window(storage, per_address, window, "login-address")
        self._checking: Counter[str] = Counter()  # attempts per address being checked on this process

    @asynccontextmanager
    async def attempt(self, username: str, address: str) -> AsyncIterator[Attempt]:
        """Count an attempt around its password check; RateLimited (with retry_after) when over a limit."""
        account = username.lower()
        remaining, wait = await self._account.room(account)
        if remaining < self._account.item.amount:  # the account has failures of its own
            left, address_wait = await self._address.room(address)
            if left - self._checking[address] <= 0:
                raise RateLimited(MESSAGE, retry_after=address_wait)
        wait = await self._account.hit(account)
        if wait:
            raise RateLimited(MESSAGE, retry_after=wait)
        attempt = Attempt()
        self._checking[address] += 1
        try:
            yield attempt
        finally:
            self._checking[address] -= 1
            if not self._checking[address]:
                del self._checking[address]
            if attempt.succeeded:
                await self._account.clear(account)
            else:
                await self._address.hit(address)
