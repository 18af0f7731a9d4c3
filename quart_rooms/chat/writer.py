"""The message writer: group commit, one failing message never fails its neighbours, drain on stop.

Posts are queued in the order their sockets' events took effect. One task
takes everything queued (up to MAX_BATCH), gives each message its room's next
id and stores them all in one transaction, so one commit (and on SQLite one
fsync) serves many senders. After the commit the batch is handed to
`on_commit` (the room feeds deliver it here and the broker tells the other
processes), and only then is each sender's future resolved: an ack means
stored and delivered.

A batch that the database refuses is stored again message by message, so
only the message at fault fails. A client_id stored by another process at the
same moment rolls the batch back and stores it again, now answering that
client_id from storage (contract, "message": a retry answers the first id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from quart_rooms.errors import AppError, NoSuchRoom, Unavailable
from quart_rooms.storage import queries
from quart_rooms.storage.db import Database, busy
from quart_rooms.storage.queries import NewMessage, StoredMessage

MAX_BATCH = 256
RACE_RETRIES = 5
log = logging.getLogger(__name__)

# on_commit(room id -> (epoch, new messages in id order)): called once per committed batch, without suspending.
OnCommit = Callable[[dict[int, tuple[str, list[StoredMessage]]]], None]


@dataclass(slots=True)
class _Pending:
    item: NewMessage
    epoch: str
    done: asyncio.Future[StoredMessage]


class Writer:
    """Stores posted messages with group commit and hands each committed batch on."""

    def __init__(self, db: Database, on_commit: OnCommit) -> None:
        self._db = db
        self._on_commit = on_commit
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[None] | None = None
        self.accepting = False

    def start(self) -> None:
        """Start taking messages."""
        self._queue = asyncio.Queue()
        self.accepting = True
        self._task = asyncio.get_running_loop().create_task(self._run(), name="message-writer")

    def submit(self, item: NewMessage, epoch: str) -> asyncio.Future[StoredMessage]:
        """Queue a message (without suspending, so queue order is the order of the calls).

        The future resolves to the stored message once it is committed and
        delivered here, or raises an AppError (NoSuchRoom when the room went
        away, Unavailable when storage failed or the server is stopping).
        """
        if not self.accepting or self._task is None or self._task.done():
            raise Unavailable("The server is not taking messages right now; try again shortly.")
        done: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(item, epoch, done))
        return done

    async def stop(self, timeout: float) -> None:
        """Refuse new messages, store every queued one (up to `timeout` seconds), then stop."""
        self.accepting = False
        if self._task is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while (not self._queue.empty() or self._writing is not None) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        if self._writing is not None:
            log.warning("the writer's last batch was not stored within %.1f s; its messages may be stored but were not acked", timeout)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)  # a cancellation of stop() itself still raises
        self._task = None
        while not self._queue.empty():  # only when storage hung past the timeout
            pending = self._queue.get_nowait()
            if not pending.done.done():
                pending.done.set_exception(Unavailable("The server stopped before storing the message."))

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            # Shielded: stopping the writer never cancels a batch halfway.
            self._writing = asyncio.get_running_loop().create_task(self._write(batch))
            try:
                await asyncio.shield(self._writing)
            finally:
                if self._writing.done():
                    self._writing = None

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            results = await self._store(batch)
        except Exception as exc:
            overloaded = busy(exc)
            if overloaded is not None:  # storage, not a message, is at fault: no retry one by one
                log.warning("storing a batch of %d failed: storage is busy (%s)", len(batch), exc)
                for pending in batch:
                    self._fail(pending, overloaded)
                return
            if len(batch) == 1:
                log.exception("storing a message failed")
                self._fail(batch[0], Unavailable("The message could not be stored; try again.", retry_after=1.0))
                return
            log.warning("storing a batch of %d failed; storing them one by one", len(batch), exc_info=True)
            for pending in batch:  # isolate the message at fault
                await self._write([pending])
            return
        self._hand_on(batch, results)

    async def _store(self, batch: list[_Pending]) -> list[tuple[StoredMessage | None, bool]]:
        """Store the batch in one transaction: (message, is new) per item, None where the room is gone."""
        items = [p.item for p in batch]
        for attempt in range(RACE_RETRIES):
            try:
                async with self._db.writes() as session, session.begin():
                    return await queries.store_messages(session, items)
            except queries.ClientIdRace:
                log.info("a client_id was stored elsewhere meanwhile; storing the batch again (%d)", attempt + 1)
        raise Unavailable("The message could not be stored; try again.")

    def _hand_on(self, batch: list[_Pending], results: list[tuple[StoredMessage | None, bool]]) -> None:
        fresh: dict[int, tuple[str, list[StoredMessage]]] = {}
        for pending, (message, new) in zip(batch, results, strict=True):
            if message is not None and new:
                fresh.setdefault(pending.item.room_id, (pending.epoch, []))[1].append(message)
        try:
            self._on_commit(fresh)
        except Exception:  # stored is stored: a delivery fault must not hide that
            log.exception("handing on %d committed messages failed", sum(len(m) for _, m in fresh.values()))
        for pending, (message, _new) in zip(batch, results, strict=True):
            if pending.done.done():
                continue
            if message is None:
                pending.done.set_exception(NoSuchRoom("The room was deleted."))
            else:
                pending.done.set_result(message)

    @staticmethod
    def _fail(pending: _Pending, error: AppError) -> None:
        if not pending.done.done():
            pending.done.set_exception(error)
