"""Sign-in throttling: counts failed attempts per account and per client address."""

from __future__ import annotations

import math
import time
from collections import deque

from quart_rooms.errors import RateLimited

MAX_TRACKED = 10_000


class LoginThrottle:
    """Refuses sign-in attempts after too many recent failures; successes are never counted."""

    def __init__(self, *, per_account: int, per_address: int, window: int) -> None:
        self.limits = {"account": per_account, "address": per_address}
        self.window = window
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def check(self, username: str, address: str) -> None:
        """Raise RateLimited (with the seconds to wait) while either counter is full."""
        now = time.monotonic()
        for key in (("account", username.lower()), ("address", address)):
            times = self._recent(key, now)
            if len(times) >= self.limits[key[0]]:
                wait = max(1, math.ceil(times[0] + self.window - now))
                raise RateLimited("Too many failed sign-ins; try again later.", retry_after=wait)

    def failed(self, username: str, address: str) -> None:
        """Count one failed attempt against the account and the address."""
        now = time.monotonic()
        if len(self._failures) > MAX_TRACKED:  # many made-up names: drop what has aged out
            for key in list(self._failures):
                self._recent(key, now)
        for key in (("account", username.lower()), ("address", address)):
            self._failures.setdefault(key, deque()).append(now)
