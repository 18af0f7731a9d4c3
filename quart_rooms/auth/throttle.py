"""Sign-in throttling: failed attempts per account and per client address (contract, "Command
line and settings": successes are never counted; 1.1: brute force stays throttled while a user
with no failures of their own signs in).

- Per account: at most `per_account` failures within the window, and never
  more password checks at once than the failures still allowed: the others
  wait for a check to finish. Sixty concurrent guesses get five checks; twelve
  concurrent correct sign-ins all succeed, five at a time. A success clears
  the account's failures.
- Per address: failures are counted, plus the checks under way on this
  process. The address limit applies only to accounts that have failures of
  their own: an office behind one address, or a sprayer's made-up names,
  never locks out a user who has not failed; a sprayer gets one guess per real
  account per window once the address is over its limit.

The failure windows live in the `limits` storage (Redis when configured), so
every worker and node counts together; the checks under way are counted per
process, so several processes may each run their share of concurrent checks.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from quart_rooms.errors import InvalidCredentials, RateLimited
from quart_rooms.ratelimit import LimitStore, Window
from quart_rooms.tasks import within

MESSAGE = "Too many failed sign-ins; try again later."
MAX_WAIT = 10.0  # seconds an attempt waits for the account's other checks before 429


@dataclass
class Attempt:
    """One sign-in attempt under way; set `succeeded` once the password matched.

    An attempt that raised InvalidCredentials counts as a failure; one that
    ended otherwise (the server busy, storage away, the client gone) counts as
    neither, so a busy server never locks anyone out.
    """

    succeeded: bool = False
    failed: bool = False


class LoginThrottle:
    """Refuses sign-in attempts after too many recent failures."""

    def __init__(self, storage: LimitStore, *, per_account: int, per_address: int, window: int) -> None:
        self._account = Window(storage, per_account, window, "login-account")
        self._address = Window(storage, per_address, window, "login-address")
        self._checking_account: Counter[str] = Counter()  # password checks under way, per account
        self._checking_address: Counter[str] = Counter()
        self._done: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._done is None:
            self._done = asyncio.Condition()
        return self._done

    async def _admit(self, account: str, address: str) -> None:
        """Wait until a check of this account may start; RateLimited when it may not."""
        deadline = asyncio.get_running_loop().time() + MAX_WAIT
        while True:
            left, wait = await self._account.room(account)
            if left <= 0:
                raise RateLimited(MESSAGE, retry_after=wait)
            if left < self._account.item.amount:  # the account has failures of its own
                address_left, address_wait = await self._address.room(address)
                if address_left - self._checking_address[address] <= 0:
                    raise RateLimited(MESSAGE, retry_after=address_wait)
            if left - self._checking_account[account] > 0:
                return
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise RateLimited("Too many sign-ins of this account at once; try again.", retry_after=1.0)
            async with self._condition():
                try:
                    await within(remaining, self._condition().wait())
                except TimeoutError:
                    pass

    @asynccontextmanager
    async def attempt(self, username: str, address: str) -> AsyncIterator[Attempt]:
        """Admit an attempt around its password check; RateLimited (with retry_after) when over a limit."""
        account = username.lower()
        await self._admit(account, address)
        attempt = Attempt()
        self._checking_account[account] += 1
        self._checking_address[address] += 1
        try:
            yield attempt
        except InvalidCredentials:
            attempt.failed = True
            raise
        finally:
            for counter, key in ((self._checking_account, account), (self._checking_address, address)):
                counter[key] -= 1
                if not counter[key]:
                    del counter[key]
            if attempt.succeeded:
                await self._account.clear(account)
            elif attempt.failed:
                await self._account.hit(account)
                await self._address.hit(address)
            async with self._condition():
                self._condition().notify_all()
