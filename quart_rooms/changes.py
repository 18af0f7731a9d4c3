"""The admin-change log: appended in each admin transaction, followed by every server process.

Every change to accounts, rooms, grants, sign-in sessions and messages'
deletion is a numbered row of `changes`, written in the same transaction as
the change itself (`queries.append_change`). Every process follows the log
from the position it had when it started: it is woken at once when the change
was made here, through the broker when it was made elsewhere, and by polling
(every `poll_interval` seconds, faster while the broker is away), so a change
reaches every process even when a wake-up is lost. Each change is handed, in
id order, to the listeners: the access caches, the room feeds and the live
sockets, which re-check memberships and kick where access is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quart_rooms.storage import queries
from quart_rooms.tasks import within

log = logging.getLogger(__name__)

# Kinds of change, with their data:
# user.create {user, user_id}; user.update {user, user_id, admin: [old, new], ended: bool};
# user.delete {user, user_id}; session.end {user, user_id, sid};
# room.create {room, room_id, public}; room.update {room, room_id, public: [old, new]};
# room.delete {room, room_id, public, grants: {username: role}};
# grant.put / grant.delete {room, room_id, user, user_id, old, new} (grant roles or null);
# message.delete {room, room_id, epoch, id}.


APPLY_WAIT = 5.0  # seconds a reply waits for this process to have applied its own change


async def commit_change(session: AsyncSession, changes: ChangeLog, change_id: int | None) -> None:
    """Commit a transaction that appended `change_id`, then see it applied here before replying.

    Other processes follow the log on their own; this process applies the
    change at once, so a reply to an admin means its live effects on this
    process's sockets are done.
    """
    await session.commit()
    for actor, action, target in session.info.pop("audit", ()):
        log.info("admin action: actor=%s action=%s target=%s", actor, action, target)
    if change_id is not None:
        changes.committed()
        if changes.following:
            await changes.wait_applied(change_id, APPLY_WAIT)


@dataclass(frozen=True, slots=True)
class Change:
    """One committed entry of the log."""

    id: int
    kind: str
    data: dict[str, Any]
    ts: datetime  # when it was appended (UTC)


Listener = Callable[[Change], Awaitable[None]]


class ChangeLog:
    """Follows the log on this process and hands each change to the listeners, in order."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        poll_interval: float,
        fast_poll_interval: float,
    ) -> None:
        self._sessions = sessions
        self.poll_interval = poll_interval
        self.fast_poll_interval = fast_poll_interval
        self.listeners: list[Listener] = []
        # Called after a change made here is committed, to wake the other processes.
        self.announce: Callable[[], None] = lambda: None
        self.position = 0
        self.deployment = ""  # this deployment's id (read from storage at start)
        self.fast = False  # poll at the fast interval (the broker is away)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Condition()

    async def start(self) -> None:
        """Start following from the newest change (what came before needs no live effect here)."""
        async with self._sessions() as session:
            self.position, self.deployment = await queries.change_head(session)
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="change-log")

    @property
    def following(self) -> bool:
        """True while this process follows the log (a server; not a one-off command)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)  # a cancellation of stop() still raises
            self._task = None

    def committed(self) -> None:
        """A change made on this process is committed: apply it here now and wake the others."""
        self._wake.set()
        self.announce()

    def wake(self) -> None:
        """Another process says there is a new change."""
        self._wake.set()

    async def _follow(self) -> None:
        while True:
            try:
                await within(self.fast_poll_interval if self.fast else self.poll_interval, self._wake.wait())
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:  # storage away: the next round tries again
                log.warning("change log: reading changes failed; retrying", exc_info=True)
                await asyncio.sleep(self.fast_poll_interval)

    async def catch_up(self) -> None:
        """Apply every change after the current position, in id order."""
        while True:
            async with self._sessions() as session:
                batch = await queries.changes_after(session, self.position)
            for change_id, kind, data, ts in batch:
                await self._apply(Change(change_id, kind, data, ts))
                self.position = change_id
            async with self._caught_up:
                self._caught_up.notify_all()
            if len(batch) < 500:
                return

    async def _apply(self, change: Change) -> None:
        for listener in self.listeners:
            try:
                await listener(change)
            except Exception:  # one listener's fault must not stop the log
                log.exception("change log: applying change %d (%s) failed", change.id, change.kind)

    async def wait_applied(self, change_id: int, timeout: float) -> bool:
        """Wait until this process has applied the change (True), or the timeout (seconds) passed."""
        async def reached() -> None:
            async with self._caught_up:
                await self._caught_up.wait_for(lambda: self.position >= change_id)

        try:
            await within(timeout, reached())
        except TimeoutError:
            return False
        return True
