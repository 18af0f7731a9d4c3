"""A circuit breaker for the shared Redis state: after a failure, fall back to this process alone."""

from __future__ import annotations

import logging
import time

BREAK = 5.0  # seconds to decide locally after Redis failed, before asking it again


class Breaker:
    """Tells whether to ask Redis, after a failure not for BREAK seconds (presence, rate limits).

    `fallback` completes the warning logged once per outage: what the process does meanwhile.
    """

    def __init__(self, log: logging.Logger, fallback: str) -> None:
        self._log = log
        self._fallback = fallback
        self._broken_until = 0.0  # time.monotonic() until which Redis is not asked

    @property
    def usable(self) -> bool:
        """True unless Redis failed within the last BREAK seconds."""
        return time.monotonic() >= self._broken_until

    def failed(self, exc: BaseException | None = None) -> None:
        """Redis did not answer: decide locally for BREAK seconds (one warning per outage)."""
        if self.usable:
            why = f" ({exc!r})" if exc is not None else ""
            self._log.warning("%s: Redis did not answer%s; %s for %.0f s", self._log.name, why, self._fallback, BREAK)
        self._broken_until = time.monotonic() + BREAK

    def reset(self) -> None:
        """Redis answered again: ask it from now on."""
        self._broken_until = 0.0
