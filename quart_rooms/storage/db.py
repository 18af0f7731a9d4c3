"""The database: engines and session factories opened with the app, SQLite tuned for a chat's writes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, exc, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from quart_rooms.errors import Unavailable

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_RETRY_AFTER = 5.0  # seconds a client is told to wait when storage is overloaded
SQLITE_BUSY_MS = 5000  # how long a SQLite writer waits for another process's write lock


def _sqlite_connect(synchronous: str, dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer. FULL makes every commit durable against
    # power loss, as the contract promises for an acked message; group commit keeps
    # its cost to one fsync per batch.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.close()
    # SQLAlchemy, not the driver, begins transactions (see _sqlite_begin).
    dbapi_connection.isolation_level = None


def _sqlite_begin(statement: str, conn: Connection) -> None:
    conn.exec_driver_sql(statement)


def _sqlite_engine(url: str, *, synchronous: str, writer: bool) -> AsyncEngine:
    # One writer connection per process, whose transactions take the write lock at
    # BEGIN: writes wait their turn (in the pool, or on busy_timeout for another
    # process) instead of failing with "database is locked" when a read
    # transaction tries to upgrade.
    options: dict[str, Any] = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 30} if writer else {}
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000}, **options)
    event.listen(engine.sync_engine, "connect", partial(_sqlite_connect, synchronous))
    event.listen(engine.sync_engine, "begin", partial(_sqlite_begin, "BEGIN IMMEDIATE" if writer else "BEGIN"))
    return engine


@dataclass
class Database:
    """A database's engines: `reads` for queries, `writes` for transactions that change rows.

    On PostgreSQL both are one pool. On SQLite, writes go through one connection
    per process that takes the write lock when its transaction begins.
    """

    engine: AsyncEngine
    write_engine: AsyncEngine
    reads: async_sessionmaker[AsyncSession]
    writes: async_sessionmaker[AsyncSession]

    async def dispose(self) -> None:
        """Close every connection."""
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()


def busy(error: BaseException) -> Unavailable | None:
    """The `unavailable` error (503, retry in a few seconds) for storage that is overloaded rather than
    broken: no connection came free within the pool's timeout, or SQLite's busy timeout ran out
    ("database is locked"). None for any other error."""
    if isinstance(error, exc.TimeoutError) or (
        isinstance(error, exc.OperationalError) and "database is locked" in str(error.orig)
    ):
        return Unavailable("The server is busy; try again in a few seconds.", retry_after=BUSY_RETRY_AFTER)
    return None


def open_database(url: str, *, sqlite_synchronous: str = "FULL") -> Database:
    """Engines and session factories for the URL; nothing connects until first use."""
    if url.startswith("sqlite"):
        engine = _sqlite_engine(url, synchronous=sqlite_synchronous, writer=False)
        write_engine = _sqlite_engine(url, synchronous=sqlite_synchronous, writer=True)
    else:
        engine = write_engine = create_engine(url)
    return Database(engine, write_engine, sessionmaker(engine), sessionmaker(write_engine))


def create_engine(url: str) -> AsyncEngine:
    """One engine for the URL (migrations, one-off commands); on SQLite, a writer's."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, synchronous="FULL", writer=True)
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """A session factory whose objects stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    """The Alembic configuration of the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _upgrade(connection: Connection, url: str) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema up to date on this engine.

    On SQLite foreign keys are off while migrating (SQLite's own advice for
    changing a table, https://www.sqlite.org/lang_altertable.html): a
    migration that rebuilds a table must not cascade its temporary drop to
    the rows that refer to it. They are checked before the commit.
    """
    url = engine.url.render_as_string(hide_password=False)
    async with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:  # outside any transaction, where the pragma has an effect
            await _sqlite_pragma(conn, "PRAGMA foreign_keys=OFF")
        try:
            await conn.run_sync(_upgrade, url)
            if sqlite:
                broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                if broken:
                    raise RuntimeError(f"the migration left rows that refer to nothing: {broken[:5]}")
            await conn.commit()
        finally:
            if sqlite:
                await conn.rollback()
                await _sqlite_pragma(conn, "PRAGMA foreign_keys=ON")


async def _sqlite_pragma(conn: Any, pragma: str) -> None:
    """Run a pragma on the driver's connection directly, outside SQLAlchemy's transaction."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    await raw.execute(pragma)


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers a trivial query."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
