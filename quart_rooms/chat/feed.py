"""Room feeds: each room's messages, delivered to this process's sockets strictly in id order.

Storage is the record; a feed is this process's view of a room's newest
messages. Messages reach it from this process's writer right after each
commit and from other processes through the broker, in any order and
possibly twice or never. The feed delivers each id once, in order: it holds
back an id that arrives early, and when the gap does not close within
`gap_wait` seconds it reads the missing ids from storage (ids are gapless and
commit in id order per room, so they are there). `catch_up()` compares every
feed with storage, for the moments a broker message may have been lost (a
broker reconnect, polling while it is away).

Because delivery never suspends between advancing `last` and putting the
packet on the sockets' queues, a join that takes its history up to `last` and
enters the room without suspending gets every message once: those up to
`last` in its history, the rest live. The feed keeps the latest `keep`
messages in memory, so most joins and reconnects read nothing from storage.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quart_rooms.storage import queries
from quart_rooms.storage.queries import StoredMessage

log = logging.getLogger(__name__)

# deliver(event, room name, data): put one event on every local socket in the room, without suspending.
Deliver = Callable[[str, str, dict[str, object]], None]


@dataclass(eq=False)
class RoomFeed:
    """One room's delivery state on this process."""

    room_id: int
    room: str
    epoch: str
    keep: int
    last: int = 0  # the newest id delivered here
    recent: deque[StoredMessage] = field(default_factory=deque)  # the latest delivered, ids consecutive
    held: dict[int, StoredMessage] = field(default_factory=dict)  # arrived before their turn
    doomed: set[int] = field(default_factory=set)  # deleted before they were delivered
    users: int = 0  # joins holding the feed open
    ready: asyncio.Future[None] | None = None
    gap_timer: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.keep)

    def covers(self, after_id: int) -> bool:
        """True when memory holds every delivered message after `after_id`."""
        if after_id >= self.last or not self.recent and self.last == 0:
            return True
        return bool(self.recent) and self.recent[0].id <= after_id + 1

    def after(self, after_id: int, upto: int | None = None) -> list[StoredMessage]:
        """The delivered messages after `after_id` (up to `upto`) from memory; check covers() first."""
        return [m for m in self.recent if m.id > after_id and (upto is None or m.id <= upto)]

    def latest(self, count: int) -> list[StoredMessage]:
        """The newest `count` delivered messages, oldest first."""
        return list(self.recent)[-count:] if count else []


class Feeds:
    """Every room feed of this process."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        deliver: Deliver,
        *,
        keep: int = 200,
        gap_wait: float = 0.2,
    ) -> None:
        self._sessions = sessions
        self.deliver = deliver
        self.keep = keep
        self.gap_wait = gap_wait
        self._feeds: dict[int, RoomFeed] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._feeds)

    async def open(self, room_id: int, room: str, epoch: str) -> RoomFeed:
        """The room's feed, loaded; the caller must `release()` it once its socket is in the room."""
        feed = self._feeds.get(room_id)
        if feed is not None and feed.epoch != epoch:  # a room made again under a reused id
            self.drop(room_id)
            feed = None
        if feed is None:
            feed = RoomFeed(room_id, room, epoch, self.keep)
            feed.ready = asyncio.get_running_loop().create_future()
            self._feeds[room_id] = feed
            self._spawn(self._load(feed))
        feed.users += 1
        try:
            assert feed.ready is not None
            await asyncio.shield(feed.ready)
        except BaseException:
            feed.users -= 1
            raise
        return feed

    def release(self, feed: RoomFeed) -> None:
        """A join is done with the feed (its socket is in the room, or it gave up)."""
        feed.users -= 1

    async def _load(self, feed: RoomFeed) -> None:
        assert feed.ready is not None
        try:
            async with self._sessions() as session:
                rows = await queries.messages_page(session, feed.room_id, feed.room, before_id=None, limit=feed.keep)
        except Exception as exc:
            if self._feeds.get(feed.room_id) is feed:
                del self._feeds[feed.room_id]
            feed.ready.set_exception(exc)
            feed.ready.exception()  # retrieved: the joins waiting on it get it
            return
        # A snapshot holds a prefix of the room's ids (they commit in id order), so
        # everything after its newest id arrives through offer() (held meanwhile).
        doomed = feed.doomed
        feed.recent.extend(m.tombstone() if m.id in doomed else m for m in rows)
        feed.last = rows[-1].id if rows else 0
        feed.doomed = {i for i in doomed if i > feed.last}
        for message_id in [i for i in feed.held if i <= feed.last]:
            del feed.held[message_id]
        feed.ready.set_result(None)
        self._drain(feed)

    def offer(self, room_id: int, epoch: str, messages: Iterable[StoredMessage]) -> None:
        """Committed messages of a room, from any process, in any order: deliver what is next."""
        feed = self._feeds.get(room_id)
        if feed is None or feed.epoch != epoch:
            return  # no socket here reads that room (or it is an older room of that name)
        for message in messages:
            if message.id > feed.last:
                feed.held[message.id] = message
        if feed.ready is not None and feed.ready.done():
            self._drain(feed)

    def _drain(self, feed: RoomFeed) -> None:
        """Deliver every held message that is next in line; watch any gap that remains."""
        while feed.last + 1 in feed.held:
            message = feed.held.pop(feed.last + 1)
            if message.id in feed.doomed:
                feed.doomed.discard(message.id)
                message = message.tombstone()
            feed.last = message.id
            feed.recent.append(message)
            self.deliver("message", feed.room, message.as_dict())
        for message_id in [i for i in feed.held if i <= feed.last]:
            del feed.held[message_id]
        if not feed.held:
            if feed.gap_timer is not None:
                feed.gap_timer.cancel()
                feed.gap_timer = None
        elif feed.gap_timer is None:
            loop = asyncio.get_running_loop()
            feed.gap_timer = loop.call_later(self.gap_wait, lambda: self._spawn(self._fill(feed)))

    async def _fill(self, feed: RoomFeed) -> None:
        """The gap did not close in time: read the missing ids from storage."""
        feed.gap_timer = None
        if not feed.held or self._feeds.get(feed.room_id) is not feed:
            return
        upto = min(feed.held) - 1
        log.debug("room %s: filling ids %d-%d from storage", feed.room, feed.last + 1, upto)
        try:
            await self._read_into(feed, upto)
        except Exception:
            log.warning("room %s: filling a gap from storage failed; retrying", feed.room, exc_info=True)
            self._drain(feed)  # watches the gap again

    async def fill(self, feed: RoomFeed, upto: int) -> None:
        """Deliver what storage holds up to id `upto` that this feed has not delivered yet."""
        if upto > feed.last:
            await self._read_into(feed, upto)

    async def _read_into(self, feed: RoomFeed, upto: int) -> None:
        after = feed.last
        async with self._sessions() as session:
            rows = await queries.messages_after(session, feed.room_id, feed.room, after, upto=upto)
        self.offer(feed.room_id, feed.epoch, rows)

    async def catch_up(self) -> None:
        """Deliver whatever storage has beyond each feed (after a broker outage or as a safety net)."""
        loaded = [f for f in self._feeds.values() if f.ready is not None and f.ready.done() and not f.ready.exception()]
        if not loaded:
            return
        async with self._sessions() as session:
            newest = await queries.last_message_ids(session, [f.room_id for f in loaded])
        for feed in loaded:
            if newest.get(feed.room_id, 0) > feed.last and self._feeds.get(feed.room_id) is feed:
                await self._read_into(feed, newest[feed.room_id])

    def delete(self, room_id: int, epoch: str, message_id: int) -> None:
        """A message became a tombstone: memory forgets its text and the room hears `message_deleted`."""
        feed = self._feeds.get(room_id)
        if feed is None or feed.epoch != epoch:
            return
        if feed.ready is None or not feed.ready.done() or message_id > feed.last:
            feed.doomed.add(message_id)  # not delivered yet: it goes out as a tombstone
            if message_id in feed.held:
                feed.held[message_id] = feed.held[message_id].tombstone()
            return
        for index, message in enumerate(feed.recent):
            if message.id == message_id:
                feed.recent[index] = message.tombstone()
                break
        self.deliver("message_deleted", feed.room, {"room": feed.room, "id": message_id})

    def drop(self, room_id: int) -> None:
        """Forget a room's feed (the room was deleted, or nobody here reads it)."""
        feed = self._feeds.pop(room_id, None)
        if feed is not None and feed.gap_timer is not None:
            feed.gap_timer.cancel()

    def sweep(self, in_use: Callable[[str], bool]) -> None:
        """Drop the feeds of rooms that no local socket is in or joining."""
        for room_id, feed in list(self._feeds.items()):
            if feed.users <= 0 and feed.ready is not None and feed.ready.done() and not in_use(feed.room):
                self.drop(room_id)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel gap fills under way."""
        for room_id in list(self._feeds):
            self.drop(room_id)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
