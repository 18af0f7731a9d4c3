"""The command line: serve, create-user, migrate, backup."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib.util
import sys
from contextlib import closing
from pathlib import Path

from quart_rooms import __version__
from quart_rooms.auth.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS
from quart_rooms.logs import configure_logging
from quart_rooms.settings import Settings, SettingsError, load_settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from quart_rooms.serve import hypercorn_config, serve

    host = args.host or settings.host
    port = args.port or settings.port
    if args.workers > 1 and not settings.redis_url:
        print("error: --workers above 1 needs redis_url, so that rooms span the workers", file=sys.stderr)
        return 2
    asyncio.run(_prepare(settings))
    config = hypercorn_config(settings, host=host, port=port, workers=args.workers)
    loop = args.loop or settings.event_loop
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is not None:
        config.worker_class = "uvloop"
    print(f"quart-rooms: serving on http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
    if args.workers > 1:
        print(f"quart-rooms: {args.workers} workers share one port: Socket.IO clients must connect with the "
              "websocket transport first (the page does); long-polling needs sticky sessions, which one port "
              "cannot give: put nginx in front (deploy/) or run one port per process", flush=True)
    return serve(config, settings)


async def _prepare(settings: Settings) -> None:
    """Bring the schema up to date and tell the operator how to make the first admin."""
    from quart_rooms.storage import queries
    from quart_rooms.storage.db import create_engine, migrate, sessionmaker

    engine = create_engine(settings.resolved_database_url)
    try:
        await migrate(engine)
        async with sessionmaker(engine)() as session:
            await queries.purge_expired_tokens(session)  # spent sign-ins do not pile up
            await session.commit()
            if await queries.count_users(session) == 0:
                print("quart-rooms: no accounts yet. Create the first admin with:\n"
                      "    quart-rooms create-user admin --admin", flush=True)
    finally:
        await engine.dispose()


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"Password ({MIN_PASSWORD_CHARS} characters or more): ")
    if first != getpass.getpass("Password again: "):
        raise SystemExit("error: the passwords differ")
    return first


async def _create_user(settings: Settings, username: str, password: str, is_admin: bool) -> None:
    from pydantic import ValidationError

    from quart_rooms.admin.service import Admin
    from quart_rooms.api.schemas import NewUser
    from quart_rooms.auth.passwords import Passwords
    from quart_rooms.changes import ChangeLog
    from quart_rooms.storage.db import migrate, open_database
    from quart_rooms.tasks import OwnedTasks

    try:
        NewUser(username=username, password=password, is_admin=is_admin)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"error: {problems}") from exc
    db = open_database(settings.resolved_database_url)
    passwords = Passwords(max_pending=1)
    try:
        await migrate(db.write_engine)
        changes = ChangeLog(db.reads, poll_interval=1, fast_poll_interval=1)  # running servers follow it
        await Admin(db, changes, passwords, OwnedTasks()).create_user("cli", username, password, is_admin=is_admin)
    finally:
        passwords.close()
        await db.dispose()


async def _migrate(settings: Settings) -> None:
    from quart_rooms.storage.db import create_engine, migrate

    engine = create_engine(settings.resolved_database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def _backup(settings: Settings, target: Path) -> int:
    """Copy a live SQLite database to `target` with SQLite's online backup API (consistent while serving)."""
    import sqlite3

    from sqlalchemy.engine import make_url

    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite":
        print("error: backup copies SQLite databases; for PostgreSQL use pg_dump "
              "(e.g. pg_dump -Fc -f quart-rooms.dump <database>)", file=sys.stderr)
        return 2
    source = Path(url.database or "")
    if not source.is_file():
        print(f"error: no database at {source}", file=sys.stderr)
        return 1
    if target.exists():
        print(f"error: {target} exists; name a new file", file=sys.stderr)
        return 1
    try:
        target.touch(mode=0o600, exist_ok=False)  # it holds password hashes: readable by its owner only
        with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as live, \
                closing(sqlite3.connect(target)) as copy:
            live.backup(copy)
    except (OSError, sqlite3.Error) as exc:
        print(f"error: cannot write {target}: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {source} to {target}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of `quart-rooms`."""
    top = argparse.ArgumentParser(prog="quart-rooms", description="Room-based real-time messaging server.")
    top.add_argument("--version", action="version", version=f"quart-rooms {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server under Hypercorn")
    serve.add_argument("--host", help="address to listen on (default from settings: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default from settings: 5000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (more than 1 needs redis_url)")
    serve.add_argument("--loop", choices=["uvloop", "asyncio"], help="event loop (default from settings: uvloop)")
    serve.add_argument("--uvloop", dest="loop", action="store_const", const="uvloop", help=argparse.SUPPRESS)
    create = commands.add_parser(
        "create-user",
        help=f"create an account; the password ({MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters) "
        "comes from standard input, or a prompt on a terminal",
    )
    create.add_argument("username")
    create.add_argument("--admin", action="store_true", help="make the account an admin")
    commands.add_parser("migrate", help="bring the database schema up to date")
    backup = commands.add_parser("backup", help="copy the SQLite database while it serves (PostgreSQL: use pg_dump)")
    backup.add_argument("path", type=Path, help="the new file to write")
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `quart-rooms` command."""
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "backup":
        return _backup(settings, args.path)
    if args.command == "create-user":
        from quart_rooms.errors import AppError

        try:
            asyncio.run(_create_user(settings, args.username, _read_password(), args.admin))
        except AppError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        print(f"created {'admin ' if args.admin else ''}user {args.username}")
        return 0
    asyncio.run(_migrate(settings))
    print("database schema is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
