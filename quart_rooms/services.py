"""The core parts one server shares (no transport in them), built once per app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from quart_rooms.access import Access
from quart_rooms.admin.service import Admin
from quart_rooms.auth.passwords import Passwords
from quart_rooms.auth.throttle import LoginThrottle
from quart_rooms.auth.tokens import Tokens
from quart_rooms.changes import ChangeLog
from quart_rooms.chat.feed import Deliver, Feeds
from quart_rooms.chat.service import Chat
from quart_rooms.chat.writer import Writer
from quart_rooms.metrics import Metrics
from quart_rooms.ratelimit import LimitStore, Window
from quart_rooms.settings import Settings
from quart_rooms.storage.db import Database, open_database
from quart_rooms.storage.queries import StoredMessage
from quart_rooms.tasks import OwnedTasks

CHANGE_POLL = 2.0  # seconds between reads of the change log while the broker works (or without one)
FAST_POLL = 0.5  # seconds between reads of storage while the broker is away


@dataclass
class Services:
    """Settings, storage, tokens, access rules, chat and admin of one running server."""

    settings: Settings
    db: Database
    tokens: Tokens
    access: Access
    passwords: Passwords
    throttle: LoginThrottle
    changes: ChangeLog
    feeds: Feeds
    chat: Chat
    admin: Admin
    tasks: OwnedTasks
    metrics: Metrics
    # Tells the other processes (set when a broker is configured).
    publish: Callable[[dict[str, Any]], None] = field(default=lambda message: None)
    # Set when a broker is configured, so /readyz can ask it.
    broker_ping: Callable[[], Awaitable[object]] | None = None

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Everything for these settings; nothing connects until first use."""
        db = open_database(settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous)
        metrics = Metrics()
        tasks = OwnedTasks()
        access = Access(db.reads)
        passwords = Passwords(max_pending=settings.max_pending_sign_ins)
        storage = LimitStore(settings.redis_url, settings.redis_channel)
        changes = ChangeLog(db.reads, poll_interval=CHANGE_POLL, fast_poll_interval=FAST_POLL)
        feeds = Feeds(db.reads, _no_delivery)
        services: Services
        writer = Writer(db, lambda batch: services.committed(batch))
        services = cls(
            settings=settings,
            db=db,
            tokens=Tokens(settings, db, changes),
            access=access,
            passwords=passwords,
            throttle=LoginThrottle(
                storage,
                per_account=settings.login_failures_per_account,
                per_address=settings.login_failures_per_address,
                window=settings.login_failure_window,
            ),
            changes=changes,
            feeds=feeds,
            chat=Chat(
                db, access, feeds, writer, changes, tasks,
                rate=Window(storage, settings.messages_per_10s, 10, "messages"),
                join_rate=Window(storage, settings.joins_per_10s, 10, "joins"),
                max_message_chars=settings.max_message_chars,
                max_recovery=settings.max_recovery,
            ),
            admin=Admin(db, changes, passwords, tasks),
            tasks=tasks,
            metrics=metrics,
        )
        changes.listeners.append(_invalidate(access))
        access.on_denied = lambda reason: metrics.denials.labels(reason).inc()
        return services

    def committed(self, batch: dict[int, tuple[str, list[StoredMessage]]]) -> None:
        """The writer committed messages: deliver them here, then tell the other processes."""
        for room_id, (epoch, messages) in batch.items():
            self.metrics.messages.inc(len(messages))
            self.feeds.offer(room_id, epoch, messages)
            self.publish({
                "t": "m", "r": room_id, "e": epoch, "room": messages[0].room,
                "m": [[m.id, m.user, m.msg, m.ts.isoformat(), m.deleted] for m in messages],
            })

    def received(self, message: dict[str, Any]) -> None:
        """Messages another process committed, from the broker: to the room's feed here."""
        room = message["room"]
        self.feeds.offer(
            message["r"], message["e"],
            (StoredMessage(i, room, user, msg, datetime.fromisoformat(ts), bool(deleted))
             for i, user, msg, ts, deleted in message["m"]),
        )


def _no_delivery(event: str, room: str, data: dict[str, object]) -> None:
    """Until the real-time side is attached, nobody is listening."""


def _invalidate(access: Access) -> Callable[[Any], Awaitable[None]]:
    async def listener(change: Any) -> None:
        access.changed(change.kind, change.data)

    return listener


__all__ = ["Deliver", "Services"]
