"""Chat use cases with no transport in them: join history, history pages, posting, deletion."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from quart_rooms.access import Access, Principal, RoomAccess, may_delete_message
from quart_rooms.changes import ChangeLog, commit_change
from quart_rooms.chat.feed import Feeds, RoomFeed
from quart_rooms.chat.writer import Writer
from quart_rooms.errors import BadRequest, Forbidden, NotFound, RateLimited, TooLarge, Unavailable
from quart_rooms.names import storable
from quart_rooms.ratelimit import Window
from quart_rooms.storage import queries
from quart_rooms.storage.db import Database
from quart_rooms.storage.queries import NewMessage, StoredMessage
from quart_rooms.tasks import OwnedTasks

HISTORY_ON_JOIN = 50
MAX_CLIENT_ID_CHARS = 64
DECIDE_ATTEMPTS = 3  # access decisions a post makes again when access keeps changing under it


@dataclass(frozen=True, slots=True)
class JoinHistory:
    """What a join acknowledges: history up to the cut, whether more exists, whether the epoch reset."""

    messages: list[StoredMessage]
    more: bool
    reset: bool


class Chat:
    """History reads, message posts and deletions; every one checked against the access rules."""

    def __init__(
        self,
        db: Database,
        access: Access,
        feeds: Feeds,
        writer: Writer,
        changes: ChangeLog,
        tasks: OwnedTasks,
        *,
        rate: Window,
        join_rate: Window,
        max_message_chars: int,
        max_recovery: int,
    ) -> None:
        self._db = db
        self.access = access
        self.feeds = feeds
        self.writer = writer
        self._changes = changes
        self._tasks = tasks
        self._rate = rate
        self._join_rate = join_rate
        self.max_message_chars = max_message_chars
        self.max_recovery = max_recovery

    async def open_room(self, user: Principal, room: str) -> tuple[RoomAccess, RoomFeed]:
        """The user's access to a room (read at least) and its loaded feed; release the feed after.

        RateLimited beyond `joins_per_10s` joins of the user (a join may read storage)."""
        wait = await self._join_rate.hit(user.username.lower())
        if wait:
            raise RateLimited(f"Too many joins; wait {wait:.1f} s.", retry_after=wait)
        found = await self.access.require(user, room, "read")
        return found, await self.feeds.open(found.room_id, found.room, found.epoch)

    async def history(self, feed: RoomFeed, *, since_id: int | None, epoch: str | None) -> JoinHistory:
        """The join history up to what the feed has delivered, returned without suspending after the cut.

        Contract 1.1, "Recovery is bounded and honest": without `since_id`, or
        with an `epoch` from before the room was made again (`reset`), the
        latest HISTORY_ON_JOIN messages; with `since_id`, every message after
        it, at most `max_recovery` of them, oldest first (`more` when there are
        more). The caller enters the room right after this returns, so every
        message is either in this history or arrives live, once.
        """
        reset = epoch is not None and epoch != feed.epoch
        if since_id is not None and not reset and since_id > feed.last:
            # The client saw ids this process has not delivered yet (it came from a node that
            # was ahead): deliver up to them first, so that none of them comes live again.
            await self.feeds.fill(feed, since_id)  # past the room's newest id: nothing after it
        if since_id is None or reset:
            return JoinHistory(feed.latest(HISTORY_ON_JOIN), more=False, reset=reset)
        read: list[StoredMessage] = []
        start = since_id
        while not feed.covers(start):  # memory does not reach back that far: read storage up to the feed
            upto = feed.last
            async with self._db.reads() as session:
                rows = await queries.messages_after(
                    session, feed.room_id, feed.room, start, upto=upto, limit=self.max_recovery + 1 - len(read)
                )
            read += rows
            if len(read) > self.max_recovery:
                return JoinHistory(_as_deleted_in(feed, read[: self.max_recovery]), more=True, reset=False)
            start = read[-1].id if read else upto
            if not rows:
                start = max(start, upto)
        history = _as_deleted_in(feed, read) + feed.after(start)
        more = len(history) > self.max_recovery
        return JoinHistory(history[: self.max_recovery], more=more, reset=False)

    async def page(
        self, user: Principal, room: str, *, before_id: int | None, after_id: int | None, limit: int
    ) -> list[StoredMessage]:
        """A page of a room's history for a reader, oldest first: before `before_id` (or the newest),
        or after `after_id` (contract 1.1, reading the rest of a recovery)."""
        found = await self.access.require(user, room, "read")
        async with self._db.reads() as session:
            if after_id is not None:
                return await queries.messages_after(session, found.room_id, found.room, after_id, limit=limit)
            return await queries.messages_page(session, found.room_id, found.room, before_id=before_id, limit=limit)

    def check_text(self, msg: object, client_id: object) -> tuple[str, str | None]:
        """The message text and client_id if they are acceptable; BadRequest or TooLarge otherwise."""
        if not isinstance(msg, str) or not msg.strip():
            raise BadRequest("msg must be a non-empty string.")
        if len(msg) > self.max_message_chars:
            raise TooLarge(f"A message may have at most {self.max_message_chars} characters.")
        if not storable(msg):
            raise BadRequest("msg may not contain NUL or unpaired surrogate characters.")
        if client_id is not None and (
            not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_CHARS or not storable(client_id)
        ):
            raise BadRequest(f"client_id must be a string of 1-{MAX_CLIENT_ID_CHARS} characters.")
        return msg, client_id

    async def post(self, user: Principal, room: str, msg: str, client_id: str | None) -> asyncio.Future[StoredMessage]:
        """Check access and the rate limit and queue the message; the future resolves once it is
        stored and delivered. Queue order is the order of the calls' ends (contract 1.1, one socket's
        messages get ids in the order it sent them, when the caller serializes its calls)."""
        generation = self.access.generation
        found = await self.access.require(user, room, "write")
        wait = await self._rate.hit(user.username.lower())
        if wait:
            raise RateLimited(f"Too many messages; wait {wait:.1f} s.", retry_after=wait)
        for _ in range(DECIDE_ATTEMPTS):
            if generation == self.access.generation:  # nothing suspends from here to the queue
                item = NewMessage(found.room_id, found.room, user.username, msg, client_id, author_id=user.id)
                return self.writer.submit(item, found.epoch)
            generation = self.access.generation  # access changed meanwhile (a revoke): decide again
            found = await self.access.require(user, room, "write")
        raise Unavailable("Access to the room changed meanwhile; send the message again.")

    async def delete(self, user: Principal, room: str, message_id: int) -> None:
        """Make a message a tombstone (its author, a moderator of the room, or an admin; contract 1.1).

        Raises Forbidden (also for rooms the user may not read), NoSuchRoom
        (admins, unknown room) or NotFound (unknown id). Deleting a deleted
        message again changes nothing.
        """
        found = await self.access.require(user, room, "read")
        await self._tasks.run(self._delete(user, found, message_id))

    async def _delete(self, user: Principal, found: RoomAccess, message_id: int) -> None:
        async with self._db.writes() as session:
            known = await queries.message_author(session, found.room_id, message_id)
            if known is None:
                raise NotFound(f"No message {message_id} in room {found.room!r}.")
            author_id, author, deleted = known
            if not may_delete_message(actor=user, role=found.role, author_id=author_id):
                raise Forbidden("Only the author, a moderator of the room or an admin may delete a message.")
            if deleted:
                return
            await queries.delete_message(session, found.room_id, message_id)
            change_id = await queries.append_change(session, "message.delete", {
                "room": found.room, "room_id": found.room_id, "epoch": found.epoch, "id": message_id,
            })
            queries.audit(session, user.username, "message.delete", f"room:{found.room} id:{message_id} by:{author}")
            await commit_change(session, self._changes, change_id)


def _as_deleted_in(feed: RoomFeed, read: list[StoredMessage]) -> list[StoredMessage]:
    """Messages read from storage, with the deletions the feed applied since (it knows the newest)."""
    if not feed.recent or not read or read[-1].id < feed.recent[0].id:
        return read
    known = {m.id: m for m in feed.recent}
    return [known.get(m.id, m) if not m.deleted else m for m in read]
