#!/usr/bin/env python3
"""Summarise a py-spy profile in collapsed-stack form (`py-spy record --format raw`).

    python bench/profile_summary.py bench/profiles/fanout-500.txt [--top 25]

Prints where the samples went: by library (of the innermost frame, i.e. self
time), the functions with the most self time, and the inclusive share of a
few frames that matter to quart-rooms (the ones named in docs/benchmarks.md).
`python bench/run.py --profile DIR` records such files for the quart-rooms runs.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Library of a frame, from its file path (first match wins).
LIBRARIES = [
    ("quart_rooms/", "quart-rooms"),
    ("wsproto/", "wsproto"),
    ("h11/", "h11"),
    ("hypercorn/", "hypercorn"),
    ("engineio/", "engineio"),
    ("socketio/", "socketio"),
    ("sqlalchemy/", "sqlalchemy"),
    ("aiosqlite/", "aiosqlite"),
    ("asyncpg/", "asyncpg"),
    ("redis/", "redis"),
    ("limits/", "limits"),
    ("quart/", "quart"),
    ("quart_schema/", "quart"),
    ("werkzeug/", "quart"),
    ("pydantic", "pydantic"),
    ("jwt/", "pyjwt"),
    ("argon2/", "argon2"),
    ("prometheus_client/", "prometheus"),
    ("uvloop/", "uvloop"),
    ("asyncio/", "asyncio"),
    ("json/", "json"),
    ("logging/", "logging"),
    ("dataclasses", "dataclasses"),
    ("<string>", "generated (dataclass __init__ etc.)"),
]

# Frames whose inclusive share answers "how much of the time is this part?".
MARKERS = [
    ("socket.io event dispatch (all handlers)", "_trigger_event", "socketio/"),
    ("quart-rooms event turn (ChatNamespace._run)", "_run", "quart_rooms/realtime/namespace.py"),
    ("quart-rooms message", "_message", "quart_rooms/realtime/namespace.py"),
    ("quart-rooms join", "_join", "quart_rooms/realtime/namespace.py"),
    ("quart-rooms on_connect", "on_connect", "quart_rooms/realtime/namespace.py"),
    ("quart-rooms welcome", "_welcome", "quart_rooms/realtime/namespace.py"),
    ("quart-rooms on_disconnect", "on_disconnect", "quart_rooms/realtime/namespace.py"),
    ("Chat.post", "post", "quart_rooms/chat/service.py"),
    ("Chat.history (join history, since_id)", "history", "quart_rooms/chat/service.py"),
    ("writer: group commit (_write)", "_write", "quart_rooms/chat/writer.py"),
    ("writer: SQL (_store)", "_store", "quart_rooms/chat/writer.py"),
    ("store_messages (SQL)", "store_messages", "quart_rooms/storage/queries.py"),
    ("room feeds (any)", "", "quart_rooms/chat/feed.py"),
    ("fanout.deliver", "deliver", "quart_rooms/realtime/fanout.py"),
    ("presence (any)", "", "quart_rooms/presence.py"),
    ("broker (any)", "", "quart_rooms/realtime/broker.py"),
    ("Access (any)", "", "quart_rooms/access.py"),
    ("sign-in route (login)", "login", "quart_rooms/auth/routes.py"),
    ("refresh route", "refresh", "quart_rooms/auth/routes.py"),
    ("Tokens.rotate", "rotate", "quart_rooms/auth/tokens.py"),
    ("Tokens.issue_pair", "issue_pair", "quart_rooms/auth/tokens.py"),
    ("argon2 (any, in its threads)", "", "argon2/"),
    ("get_session / save_session", "get_session", "socketio/"),
    ("engine.io socket writer", "_websocket_handler", "engineio/"),
    ("engine.io packet decode", "decode", "engineio/packet.py"),
    ("socket.io packet decode", "decode", "socketio/packet.py"),
    ("socket.io packet encode", "encode", "socketio/packet.py"),
    ("hypercorn ws send (wsproto)", "asgi_send", "hypercorn/protocol/ws_stream.py"),
    ("hypercorn ws receive (wsproto)", "handle", "hypercorn/protocol/ws_stream.py"),
    ("wsproto (any)", "", "wsproto/"),
    ("Quart request handling (any)", "", "quart/"),
    ("SQLAlchemy (any)", "", "sqlalchemy/"),
    ("aiosqlite (any)", "", "aiosqlite/"),
    ("asyncpg (any)", "", "asyncpg/"),
    ("redis (any)", "", "redis/"),
    ("json dumps/loads (any)", "", "json/"),
    ("logging (any)", "", "logging/"),
    ("asyncio event loop (any)", "", "asyncio/"),
]


def _idle_lines() -> set[tuple[str, str]]:
    """(file, line) of frames where a thread only waits: py-spy counts them as busy.

    aiosqlite's worker thread blocks in `tx.get()` on a SimpleQueue between calls (and a
    SQLAlchemy call parked in aiosqlite's `return await future` shows up as innermost frame);
    a ThreadPoolExecutor's idle threads (argon2's, asyncio's default executor) in
    `work_queue.get(block=True)`.
    """
    found = set()
    import importlib.util

    for module, path, needle in (("aiosqlite.core", "aiosqlite/core.py", "= tx.get()"),
                                 # A SQLAlchemy greenlet parked on aiosqlite's future: py-spy (nonblocking)
                                 # still reports it as the innermost frame while the call waits.
                                 ("aiosqlite.core", "aiosqlite/core.py", "return await future"),
                                 ("concurrent.futures.thread", "concurrent/futures/thread.py",
                                  "work_queue.get(block=True)")):
        try:
            spec = importlib.util.find_spec(module)
            if spec and spec.origin:
                for number, text in enumerate(Path(spec.origin).read_text().splitlines(), 1):
                    if needle in text and not text.lstrip().startswith("#"):
                        found.add((path, str(number)))
        except Exception:
            pass
    return found


IDLE = _idle_lines()


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        m = FRAME.match(frames[-1])
        if m and (relpath(m.group("file") or ""), m.group("line") or "") in IDLE:
            continue  # a thread that only waits
        stacks.append((frames, int(count)))
    return stacks


def relpath(file: str) -> str:
    """The path from the package on (py-spy already shortens most of them)."""
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return file


def library(frame: str) -> str:
    m = FRAME.match(frame)
    file = relpath(m.group("file") if m else frame)
    for needle, name in LIBRARIES:
        if file.startswith(needle):
            return name
    if m and "<built-in>" in file:
        return "builtin"
    return "other"


def short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    return f"{m.group('func')} ({relpath(m.group('file'))})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    stacks = parse(args.profile)
    total = sum(c for _, c in stacks)
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    by_lib: Counter[str] = Counter()
    by_self: Counter[str] = Counter()
    for frames, count in stacks:
        by_lib[library(frames[-1])] += count
        by_self[short(frames[-1])] += count
    print(f"# {args.profile.name}: {total} busy samples (waiting threads left out)\n")
    print("## self time by library (innermost frame)\n")
    for name, count in by_lib.most_common():
        print(f"{100 * count / total:5.1f}%  {name}")
    print(f"\n## top {args.top} functions by self time\n")
    for name, count in by_self.most_common(args.top):
        print(f"{100 * count / total:5.1f}%  {name}")
    by_task: Counter[str] = Counter()
    for frames, count in stacks:
        rest = frames
        for i, frame in enumerate(frames):
            if frame.startswith("Runner.run ") or frame.startswith("Handle._run "):
                rest = frames[i + 1:]
        by_task[short(rest[0]) if rest else "(event loop itself)"] += count
    print(f"\n## by task: the outermost coroutine of each sample (top {args.top})\n")
    for name, count in by_task.most_common(args.top):
        print(f"{100 * count / total:5.1f}%  {name}")
    print("\n## inclusive share of selected frames\n")
    for label, func, file in MARKERS:
        hit = 0
        for frames, count in stacks:
            for frame in frames:
                m = FRAME.match(frame)
                name = m.group("func") if m else ""
                if m and relpath(m.group("file") or "").startswith(file) and (
                    not func or name == func or name.endswith("." + func) or f".{func}." in name
                ):
                    hit += count
                    break
        if hit:
            print(f"{100 * hit / total:5.1f}%  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
