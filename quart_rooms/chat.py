"""Chat use cases with no transport in them: history, posting with group commit, limits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quart_rooms.access import Access, Principal, RoomAccess
from quart_rooms.errors import AppError, BadRequest, NoSuchRoom, RateLimited, TooLarge, Unavailable
from quart_rooms.storage import queries
from quart_rooms.storage.queries import NewMessage, StoredMessage

HISTORY_ON_JOIN = 50
MAX_BATCH = 256
MAX_CLIENT_ID_CHARS = 64
log = logging.getLogger(__name__)

Deliver = Callable[[StoredMessage], Awaitable[None]]


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
    """The latest messages of each room this process has delivered, kept in step with the writer.

    Only this process's writer adds to it, so it is used only when that writer
    is the only one (no other worker or node shares the database). The writer
    adds each committed message right before delivering it, without
    suspending in between, so for a loaded room the newest id here is the
    newest id delivered. Messages delivered while a room is being loaded are
    kept aside and added when the load lands, so a load is never stale. An
    admin change (a new access generation) drops everything, since SQLite may
    give a deleted room's id to a new room.
    """

    def __init__(self, size: int, *, enabled: bool) -> None:
        self.size = size
        self.enabled = enabled
        self._rooms: dict[int, deque[StoredMessage]] = {}
        self._loading: dict[int, tuple[asyncio.Future[None], list[StoredMessage]]] = {}
        self._reserved: dict[int, int] = {}  # room id -> lowest id committed but not yet delivered
        self._deliveries: dict[int, int] = {}  # room id -> messages delivered by this process
        self._generation = 0

    def _check(self, generation: int) -> None:
        if generation != self._generation:
            self._rooms.clear()
            self._loading.clear()  # loads under way land nowhere
            self._generation = generation

    def get(self, room_id: int, since_id: int | None, generation: int) -> list[StoredMessage] | None:
        """The join history from memory, or None when memory cannot answer."""
        self._check(generation)
        recent = self._rooms.get(room_id)
        if recent is None:
            return None
        if since_id is None:
            return list(recent)
        # Memory answers only when it holds everything after since_id.
        if len(recent) < self.size or since_id >= recent[0].id - 1:
            return [m for m in recent if m.id > since_id]
        return None

    def reserve(self, stored: Iterable[tuple[int, StoredMessage | None]]) -> None:
        """The writer has ids for these messages: each counts as undelivered until its add()."""
        for room_id, message in stored:
            if message is not None and message.id < self._reserved.get(room_id, message.id + 1):
                self._reserved[room_id] = message.id

    def release(self, rooms: Iterable[int]) -> None:
        """The writer's batch is delivered (or failed)."""
        for room_id in rooms:
            self._reserved.pop(room_id, None)

    def undelivered_from(self, room_id: int) -> int | None:
        """The lowest id of the room that the writer has committed but not yet delivered, if any."""
        return self._reserved.get(room_id)

    def delivered_only(self, room_id: int, messages: list[StoredMessage]) -> list[StoredMessage]:
        """Drop messages the writer has committed but not yet delivered: they will arrive live."""
        first = self._reserved.get(room_id)
        return messages if first is None else [m for m in messages if m.id < first]

    async def load(self, room_id: int, generation: int, read: Callable[[], Awaitable[list[StoredMessage]]]) -> None:
        """Read a room's latest messages into memory (one read for any number of joins)."""
        self._check(generation)
        if not self.enabled or room_id in self._rooms:
            return
        if room_id in self._loading:
            await asyncio.shield(self._loading[room_id][0])
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry: tuple[asyncio.Future[None], list[StoredMessage]] = (done, [])
        self._loading[room_id] = entry
        try:
            read_rows = await read()
            kept = self.delivered_only(room_id, read_rows)
            latest = deque(kept, maxlen=self.size)
            # Keep it only if the read was not dropped by an admin change meanwhile, and held
            # nothing undelivered: a cut read may no longer be the room's latest messages.
            if self._loading.get(room_id) is entry and len(kept) == len(read_rows):
                del self._loading[room_id]
                for message in entry[1]:  # committed while we read: add what the read missed
                    if not latest or message.id > latest[-1].id:
                        latest.append(message)
                self._rooms[room_id] = latest
        finally:
            if self._loading.get(room_id) is entry:
                del self._loading[room_id]
            done.set_result(None)

    def add(self, room_id: int, message: StoredMessage) -> None:
        """Record a message right before it is delivered (the caller does not suspend in between)."""
        self._deliveries[room_id] = self._deliveries.get(room_id, 0) + 1
        if self._reserved.get(room_id) == message.id:
            self._reserved[room_id] = message.id + 1  # the rest of the batch is still undelivered
        recent = self._rooms.get(room_id)
        if recent is not None:
            if not recent or message.id > recent[-1].id:
                recent.append(message)
        elif room_id in self._loading:
            self._loading[room_id][1].append(message)

    def deliveries(self, room_id: int) -> int:
        """How many messages this process has delivered to the room (grows only)."""
        return self._deliveries.get(room_id, 0)


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
        """Start the writer; `deliver` sends each committed message to its room, in id order."""
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

        The caller enters the room right after this returns, without
        suspending, so the history must hold exactly the messages delivered
        before that moment: older ones are not sent again, newer ones arrive
        live. From memory that is what it holds; a database read leaves out
        what the writer has committed (and made visible) but not yet delivered.
        """
        found = await self.access.require(user, room, "read")
        await self._recent.load(found.room_id, self.access.generation, lambda: self._read(found, None, latest=True))
        cached = self._recent.get(found.room_id, since_id, self.access.generation)
        if cached is not None:
            return found, cached
        # From the database: leave out what is committed but not yet delivered (it
        # will arrive live), and read again while deliveries happen meanwhile (they
        # will not come again). The last check and the return do not suspend.
        seen = self._recent.deliveries(found.room_id)
        stored = self._recent.delivered_only(found.room_id, await self._read(found, since_id, latest=since_id is None))
        for _ in range(20):
            now = self._recent.deliveries(found.room_id)
            if now == seen:
                break
            seen = now
            last = stored[-1].id if stored else (since_id or 0)
            newer = self._recent.get(found.room_id, last, self.access.generation)
            if newer is not None:  # memory holds everything delivered since: no suspension
                return found, stored + newer
            stored += self._recent.delivered_only(found.room_id, await self._read(found, last, latest=False))
        return found, stored

    async def _read(self, found: RoomAccess, after_id: int | None, *, latest: bool) -> list[StoredMessage]:
        """The room's latest messages, or every message after after_id."""
        async with self._sessions() as session:
            if latest:  # the latest delivered: stop short of what the writer is delivering now
                before = self._recent.undelivered_from(found.room_id)
                return await queries.messages_page(
                    session, found.room_id, found.room, before_id=before, limit=HISTORY_ON_JOIN
                )
            return await queries.messages_after(session, found.room_id, found.room, after_id or 0)

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
        rooms = [p.item.room_id for p in batch]
        try:
            async with self._sessions() as session, session.begin():
                stored = await queries.store_messages(session, [p.item for p in batch])
                # The ids are known now and become visible at the commit, a
                # moment before they are delivered: joins must not count them yet.
                self._recent.reserve(zip(rooms, stored))
        except Exception as exc:  # storage failed: nobody is told the message was sent
            self._recent.release(rooms)
            log.exception("storing %d messages failed", len(batch))
            error = exc if isinstance(exc, AppError) else Unavailable("The message could not be stored; try again.")
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(error)
            return
        assert self._deliver is not None
        try:
            for pending, message in zip(batch, stored):
                if message is not None:
                    self._recent.add(pending.item.room_id, message)  # no suspension until delivered
                    await self._deliver(message)
        except Exception:  # stored is stored: a delivery fault must not hide that
            log.exception("delivering %d messages failed", len(stored))
        finally:
            self._recent.release(rooms)
        for pending, message in zip(batch, stored):
            if pending.done.done():
                continue
            if message is None:
                pending.done.set_exception(NoSuchRoom("The room was deleted."))
            else:
                pending.done.set_result(message)
