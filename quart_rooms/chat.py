"""Chat use cases with no transport in them: history, posting with group commit, limits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quart_rooms.access import Access, Principal, RoomAccess
from quart_rooms.cache import LoadOnce
from quart_rooms.errors import AppError, BadRequest, NoSuchRoom, RateLimited, TooLarge, Unavailable
from quart_rooms.storage import queries
from quart_rooms.storage.queries import NewMessage, StoredMessage

HISTORY_ON_JOIN = 50
MAX_BATCH = 256
MAX_CLIENT_ID_CHARS = 64
log = logging.getLogger(__name__)

Deliver = Callable[[list[StoredMessage]], Awaitable[None]]


class TokenBucket:
    """A per-key token bucket: `capacity` tokens, refilled evenly over `period` seconds."""

    def __init__(self, capacity: int, period: float) -> None:
        self.capacity = capacity
        self.rate = capacity / period
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """Take one token; 0 when taken, else the seconds until one is there."""
        now = time.monotonic()
        tokens, last = self._state.get(key, (float(self.capacity), now))
        tokens = min(float(self.capacity), tokens + (now - last) * self.rate)
        if tokens < 1:
            self._state[key] = (tokens, now)
            return (1 - tokens) / self.rate
        self._state[key] = (tokens - 1, now)
        return 0.0


class RecentHistory:
    """The latest messages of each room, so a join need not read the database.

    Only this process's writer adds to it, so it is used only when that writer
    is the only one (no other worker or node shares the database). A load
    that a commit to the room overtakes is not kept, and everything is dropped
    when an admin change bumps the access generation (a deleted room's id may
    be given to a new room).
    """

    def __init__(self, size: int, *, enabled: bool) -> None:
        self.size = size
        self.enabled = enabled
        self._rooms: LoadOnce[int, deque[StoredMessage]] = LoadOnce()
        self._generation = 0

    def get(self, room_id: int, since_id: int | None, generation: int) -> list[StoredMessage] | None:
        """The join history from memory, or None when it is not there."""
        if generation != self._generation:
            self._rooms.clear()
            self._generation = generation
        recent = self._rooms.peek(room_id)
        if recent is None:
            return None
        if since_id is None:
            return list(recent)
        # Memory answers only when it holds everything after since_id.
        if len(recent) < self.size or not recent or since_id >= recent[0].id - 1:
            return [m for m in recent if m.id > since_id]
        return None

    async def load(self, room_id: int, read: Callable[[], Awaitable[list[StoredMessage]]]) -> None:
        """Read a room's latest messages into memory (one read for any number of joins)."""
        if self.enabled:
            await self._rooms.get(room_id, lambda: self._read(read))

    async def _read(self, read: Callable[[], Awaitable[list[StoredMessage]]]) -> deque[StoredMessage]:
        return deque(await read(), maxlen=self.size)

    def newer(self, room_id: int, after_id: int) -> list[StoredMessage]:
        """Messages in memory with an id above after_id (committed after a database read)."""
        recent = self._rooms.peek(room_id)
        return [m for m in recent if m.id > after_id] if recent is not None else []

    def add(self, room_id: int, message: StoredMessage) -> None:
        """Record a committed message; a load of the room under way is dropped, as it may miss it."""
        recent = self._rooms.peek(room_id)
        if recent is not None:
            recent.append(message)
        else:
            self._rooms.discard(room_id)


@dataclass(slots=True)
class _Pending:
    item: NewMessage
    done: asyncio.Future[StoredMessage]


class Chat:
    """History reads and message posts; every post is checked, committed, then delivered."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        access: Access,
        *,
        max_message_chars: int,
        messages_per_10s: int,
        sole_writer: bool = True,
    ) -> None:
        self._sessions = sessions
        self.access = access
        self.max_message_chars = max_message_chars
        self._bucket = TokenBucket(messages_per_10s, 10.0)
        self._deliver: Deliver | None = None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._by_client_id: dict[tuple[str, str], asyncio.Future[StoredMessage]] = {}
        self._writer: asyncio.Task[None] | None = None
        self._recent = RecentHistory(HISTORY_ON_JOIN, enabled=sole_writer)

    def start(self, deliver: Deliver) -> None:
        """Start the writer; `deliver` sends committed messages to the rooms, in id order."""
        self._deliver = deliver
        self._queue = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())

    async def stop(self) -> None:
        """Finish the messages already queued, then stop the writer."""
        if self._writer is None:
            return
        for _ in range(500):  # up to 5 s for the writer to drain the queue
            if self._queue.empty():
                break
            await asyncio.sleep(0.01)
        self._writer.cancel()
        try:
            await self._writer
        except asyncio.CancelledError:
            pass
        self._writer = None

    async def history(self, user: Principal, room: str, *, since_id: int | None) -> tuple[RoomAccess, list[StoredMessage]]:
        """The user's access to a room (read at least) and its history for a join.

        Served from memory when it can be: that path does not suspend, so the
        caller enters the room before the writer can deliver anything newer.
        """
        found = await self.access.require(user, room, "read")
        for _ in range(3):
            cached = self._recent.get(found.room_id, since_id, self.access.generation)
            if cached is not None:
                return found, cached
            if not self._recent.enabled:
                break
            await self._recent.load(found.room_id, lambda: self._latest(found))
        async with self._sessions() as session:
            if since_id is not None:
                stored = await queries.messages_after(session, found.room_id, found.room, since_id)
            else:
                stored = await queries.messages_page(
                    session, found.room_id, found.room, before_id=None, limit=HISTORY_ON_JOIN
                )
        last = stored[-1].id if stored else (since_id or 0)
        return found, stored + self._recent.newer(found.room_id, last)

    async def _latest(self, found: RoomAccess) -> list[StoredMessage]:
        async with self._sessions() as session:
            return await queries.messages_page(session, found.room_id, found.room, before_id=None, limit=HISTORY_ON_JOIN)

    async def page(self, user: Principal, room: str, *, before_id: int | None, limit: int) -> list[StoredMessage]:
        """A page of a room's history for a reader (read role at least)."""
        found = await self.access.require(user, room, "read")
        async with self._sessions() as session:
            return await queries.messages_page(session, found.room_id, found.room, before_id=before_id, limit=limit)

    async def post(self, user: Principal, room: str, msg: object, client_id: object = None) -> StoredMessage:
        """Check, store durably and deliver one message; returns it once committed."""
        if not isinstance(msg, str) or not msg.strip():
            raise BadRequest("msg must be a non-empty string.")
        if len(msg) > self.max_message_chars:
            raise TooLarge(f"A message may have at most {self.max_message_chars} characters.")
        if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_CHARS):
            raise BadRequest(f"client_id must be a string of 1-{MAX_CLIENT_ID_CHARS} characters.")
        found = await self.access.require(user, room, "write")
        if client_id is None:
            return await self._enqueue(user, found, msg, None)
        key = (user.username, client_id)
        earlier = self._by_client_id.get(key)
        if earlier is not None:  # a retry while the first attempt is still in flight
            return await asyncio.shield(earlier)
        done: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        self._by_client_id[key] = done
        try:
            async with self._sessions() as session:
                stored = await queries.find_by_client_id(session, user.username, client_id)
            result = stored or await self._enqueue(user, found, msg, client_id)
            done.set_result(result)
            return result
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()  # retrieved: waiting retries get it, nobody else must
            raise
        finally:
            del self._by_client_id[key]

    async def _enqueue(self, user: Principal, found: RoomAccess, msg: str, client_id: str | None) -> StoredMessage:
        wait = self._bucket.take(user.username)
        if wait:
            raise RateLimited(f"Too many messages; wait {wait:.1f} s.", retry_after=max(1, round(wait)))
        if self._writer is None or self._writer.done():
            raise Unavailable("The message store is not running.")
        done: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(NewMessage(found.room_id, found.room, user.username, msg, client_id), done))
        return await done

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        """One transaction for the whole batch; deliver in id order, then answer the senders."""
        try:
            async with self._sessions() as session, session.begin():
                stored = await queries.store_messages(session, [p.item for p in batch])
        except Exception as exc:  # storage failed: nobody is told the message was sent
            log.exception("storing %d messages failed", len(batch))
            error = exc if isinstance(exc, AppError) else Unavailable("The message could not be stored; try again.")
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(error)
            return
        committed = [message for message in stored if message is not None]
        for pending, message in zip(batch, stored):
            if message is not None:
                self._recent.add(pending.item.room_id, message)
        try:
            assert self._deliver is not None
            await self._deliver(committed)
        except Exception:  # stored is stored: a delivery fault must not hide that
            log.exception("delivering %d messages failed", len(stored))
        for pending, message in zip(batch, stored):
            if pending.done.done():
                continue
            if message is None:
                pending.done.set_exception(NoSuchRoom("The room was deleted."))
            else:
                pending.done.set_result(message)
