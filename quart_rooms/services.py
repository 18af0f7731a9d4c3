"""The parts every edge (HTTP, Socket.IO, command line) shares, built once per app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from quart_rooms.access import Access
from quart_rooms.auth.throttle import LoginThrottle
from quart_rooms.auth.tokens import Tokens
from quart_rooms.chat import Chat
from quart_rooms.metrics import Metrics
from quart_rooms.notify import Notifier, NullNotifier
from quart_rooms.settings import Settings
from quart_rooms.storage.db import create_engine, sessionmaker


@dataclass
class Services:
    """Settings, storage, tokens, access rules and chat of one running server."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    tokens: Tokens
    access: Access
    chat: Chat
    throttle: LoginThrottle
    metrics: Metrics
    notifier: Notifier = field(default_factory=NullNotifier)
    # Set by the real-time server when it uses a broker, so /readyz can ask it.
    broker_ping: Callable[[], Awaitable[object]] | None = None

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Everything for these settings; nothing connects until first use."""
        engine = create_engine(settings.resolved_database_url)
        sessions = sessionmaker(engine)
        access = Access(sessions, cache=not settings.redis_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            tokens=Tokens(settings),
            access=access,
            chat=Chat(
                sessions,
                access,
                max_message_chars=settings.max_message_chars,
                messages_per_10s=settings.messages_per_10s,
                sole_writer=not settings.redis_url,
            ),
            throttle=LoginThrottle(
                per_account=settings.login_failures_per_account,
                per_address=settings.login_failures_per_address,
                window=settings.login_failure_window,
            ),
            metrics=Metrics(),
        )
