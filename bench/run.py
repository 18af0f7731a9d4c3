#!/usr/bin/env python3
"""The quart-rooms benchmark: reference server vs quart-rooms, same invocation, same generator.

    cd bench && npm ci && cd .. && python bench/run.py [--quick] [--loop asyncio]

Run it with the Python that has quart-rooms installed (the project's venv). For
every scenario it starts each server fresh on its own 127.0.0.1 port, pinned
to one core, runs the Node.js load generator pinned to the other core for a
bounded time, stops what it started by PID, and at the end prints a Markdown
table (also written to bench/results/latest.md unless --out says otherwise).
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import json
import os
import platform
import queue
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PASSWORD = "bench-password-0123"
ADMIN = "benchadmin"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# Settings the quart-rooms run changes from the defaults (said in the table's notes).
QR_LIMITS = {
    "QUART_ROOMS_MESSAGES_PER_10S": "1000000000",
    "QUART_ROOMS_MAX_SOCKETS_PER_USER": "1000000",
    "QUART_ROOMS_LOGIN_FAILURES_PER_ADDRESS": "1000000",
    "QUART_ROOMS_LOG_LEVEL": "WARNING",
}


def log(*args: Any) -> None:
    print("[bench]", *args, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- plans

@dataclass
class Plan:
    fanout_receivers: list[int]
    senders: int = 4
    window: int = 8
    warmup_s: float = 2.0
    duration_s: float = 12.0
    drain_s: float = 5.0
    connect_clients: int = 2000
    connect_concurrency: int = 100
    connect_per_room: int = 20
    many_rooms: int = 1000
    many_window: int = 1
    users: int = 100
    settle_s: float = 2.0


FULL = Plan(fanout_receivers=[10, 100, 500])
QUICK = Plan(fanout_receivers=[10, 100], warmup_s=1.0, duration_s=3.0, drain_s=3.0, connect_clients=300,
             many_rooms=100, users=20, settle_s=1.0)


# ----------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Server:
    """One server process (Hypercorn parent + one spawned worker), pinned to a core."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, cpu: int,
                 logdir: Path, ready_path: str) -> None:
        self.name, self.argv, self.env, self.port, self.cpu = name, argv, env, port, cpu
        self.ready_path = ready_path
        self.log_path = logdir / f"{name}-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker = 0
        self.helpers: list[int] = []

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(self.cpu), *self.argv], env=self.env, cwd=BENCH,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if not self.worker:
                for child in children(self.proc.pid):
                    line = cmdline(child)
                    if "spawn_main" in line:
                        self.worker = child
                    elif child not in self.helpers:
                        self.helpers.append(child)
            if self.worker and http_status("127.0.0.1", self.port, self.ready_path) == 200:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""

    def rss_kib(self) -> int:
        with open(f"/proc/{self.worker}/statm") as f:
            return int(f.read().split()[1]) * PAGE_KIB

    def cpu_s(self) -> float:
        return proc_cpu_s(self.worker)

    def stop(self) -> None:
        """SIGTERM to the Hypercorn parent (it stops its worker); SIGKILL by PID if that fails."""
        if self.proc is None:
            return
        for child in children(self.proc.pid):
            if child != self.worker and child not in self.helpers:
                self.helpers.append(child)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for pid in [self.worker, *self.helpers]:
            end = time.monotonic() + 3
            while pid and alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if pid and alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None


def core_times() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies of each core, from /proc/stat."""
    found = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                idle = v[3] + v[4]  # idle + iowait
                total = sum(v[:8])
                found[int(name[3:])] = (total - idle, total)
    return found


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    user, system = proc_cpu_split(pid)
    return user + system


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def busy_cores(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    """How many cores were busy on average between two core_times() samples."""
    busy = sum(after[c][0] - before[c][0] for c in before)
    total = sum(after[c][1] - before[c][1] for c in before)
    return len(before) * busy / total if total else 0.0


def wait_quiet(limit_s: float, threshold: float = 0.15) -> float:
    """Wait (at most limit_s) until other processes use under `threshold` cores; return the last load seen."""
    end = time.monotonic() + limit_s
    while True:
        before = core_times()
        time.sleep(1.0)
        load = busy_cores(before, core_times())
        if load < threshold or time.monotonic() >= end:
            return load
        log(f"machine busy ({load:.2f} cores used by other processes); waiting for it to calm down")


def http_status(host: str, port: int, path: str) -> int:
    try:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return 0


class Api:
    """A small JSON client of the admin HTTP API (one keep-alive connection)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.token = ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        res = self.conn.getresponse()
        raw = res.read()
        return res.status, (json.loads(raw) if raw else None)

    def close(self) -> None:
        self.conn.close()


# ----------------------------------------------------------------------------- the load generator

@dataclass
class Run:
    """What one generator run measured, with the server's side of it."""

    result: dict[str, Any]
    server_cpu_s: float = 0.0
    wall_s: float = 0.0
    rss_ready_kib: int = 0
    rss_idle_kib: int = 0
    profile: str = ""
    core_busy: dict[int, float] = field(default_factory=dict)
    server_sys_s: float = 0.0  # of server_cpu_s, in the kernel
    other_cores: float = 0.0  # CPU used by processes other than the server and the generator
    load_before: float = 0.0

    @property
    def server_cpu_share(self) -> float:
        return self.server_cpu_s / self.wall_s if self.wall_s else 0.0


def run_generator(cfg: dict[str, Any], server: Server, gen_cpu: int, logdir: Path, settle_s: float,
                  profile: Path | None = None) -> Run:
    cfg = dict(cfg, deadline_s=cfg.get("deadline_s", 240))
    argv = ["taskset", "-c", str(gen_cpu), "node", str(BENCH / "loadgen.js"), json.dumps(cfg)]
    with open(logdir / "loadgen.log", "ab") as err:
        proc = subprocess.Popen(argv, cwd=BENCH, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    lines: queue.Queue[bytes | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    run = Run(result={})
    spy: subprocess.Popen[bytes] | None = None
    cpu0 = t0 = gen0 = sys0 = 0.0
    cores0: dict[int, tuple[int, int]] = {}
    end = time.monotonic() + cfg["deadline_s"] + 10
    try:
        while time.monotonic() < end:
            try:
                raw = lines.get(timeout=1)
            except queue.Empty:
                continue
            if raw is None:
                break
            msg = json.loads(raw)
            kind = msg.get("event")
            if kind == "ready":
                run.rss_ready_kib = server.rss_kib()
            elif kind == "measure_start":
                cpu0, gen0, t0, cores0 = server.cpu_s(), proc_cpu_s(proc.pid), time.monotonic(), core_times()
                sys0 = proc_cpu_split(server.worker)[1]
                if profile is not None:
                    spy = start_py_spy(server.worker, profile, cfg, gen_cpu)
                    run.profile = str(profile)
            elif kind == "measure_end":
                run.server_cpu_s = server.cpu_s() - cpu0
                run.server_sys_s = proc_cpu_split(server.worker)[1] - sys0
                run.wall_s = time.monotonic() - t0
                cores1 = core_times()
                gen_s = proc_cpu_s(proc.pid) - gen0
                run.other_cores = max(0.0, busy_cores(cores0, cores1) - (run.server_cpu_s + gen_s) / run.wall_s)
                run.core_busy = {c: (cores1[c][0] - b0) / max(1, cores1[c][1] - t0_) for c, (b0, t0_) in cores0.items()}
            elif kind == "idle":
                time.sleep(settle_s)
                run.rss_idle_kib = server.rss_kib()
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
            elif kind == "result":
                run.result = msg["result"]
            elif kind == "error":
                raise RuntimeError(f"load generator failed: {msg.get('error')}")
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if spy is not None:
            try:
                spy.wait(timeout=cfg.get("duration_s", 10) + 20)
            except subprocess.TimeoutExpired:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=10)
    if not run.result:
        raise RuntimeError(f"load generator gave no result (exit {proc.returncode}); see {logdir / 'loadgen.log'}")
    return run


def start_py_spy(pid: int, out: Path, cfg: dict[str, Any], cpu: int) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        log("py-spy not found: no profile (pip install py-spy)")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    duration = max(1, int(cfg.get("duration_s", 10)))
    fmt = "raw" if out.suffix == ".txt" else ("speedscope" if out.suffix == ".json" else "flamegraph")
    with open(out.with_suffix(".py-spy.log"), "wb") as err:
        return subprocess.Popen(
            ["taskset", "-c", str(cpu), spy, "record", "--pid", str(pid), "--duration", str(duration),
             "--rate", "200", "--nonblocking", "--format", fmt, "--output", str(out)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
        )


# ----------------------------------------------------------------------------- the bench

@dataclass
class Bench:
    plan: Plan
    loop: str
    workdir: Path
    logdir: Path
    server_cpu: int
    gen_cpu: int
    pg_base: str
    profile_dir: Path | None
    runs: dict[str, dict[str, Run]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    pg_db: str = ""
    deflate: bool = False
    profile_reference: bool = False
    quiet_wait_s: float = 60.0
    src: Path | None = None
    loop_flag: list[str] = field(default_factory=list)
    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(32))

    # Servers ----------------------------------------------------------------

    def qr_env(self, database_url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
        env.update(QR_LIMITS)
        env["QUART_ROOMS_INSTANCE_PATH"] = str(self.workdir / "instance")
        env["QUART_ROOMS_JWT_SECRET"] = self.jwt_secret
        env["QUART_ROOMS_DATABASE_URL"] = database_url
        if self.src is not None:  # a snapshot of a commit instead of the working tree
            env["PYTHONPATH"] = str(self.src) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def detect_loop_flag(self) -> None:
        """`serve --loop X` where the CLI has it; older ones know only `--uvloop` (asyncio by default)."""
        helptext = subprocess.run([sys.executable, "-m", "quart_rooms.cli", "serve", "--help"],
                                  env=self.qr_env(""), capture_output=True, text=True, timeout=60).stdout
        if "--loop" in helptext:
            self.loop_flag = ["--loop", self.loop]
        elif self.loop == "uvloop":
            self.loop_flag = ["--uvloop"]

    def quart_rooms(self, database_url: str) -> Server:
        port = free_port()
        argv = [sys.executable, "-m", "quart_rooms.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                *self.loop_flag]
        return Server("quart-rooms", argv, self.qr_env(database_url), port, self.server_cpu, self.logdir, "/healthz")

    def reference(self) -> Server:
        port = free_port()
        argv = [sys.executable, str(BENCH / "reference_server.py"), "--port", str(port), "--loop", self.loop]
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
        return Server("reference", argv, env, port, self.server_cpu, self.logdir,
                      "/socket.io/?EIO=4&transport=polling")

    # Seeding through the CLI and the admin HTTP API ----------------------------

    def seed(self, database_url: str, rooms: list[str]) -> None:
        env = self.qr_env(database_url)
        subprocess.run([sys.executable, "-m", "quart_rooms.cli", "create-user", ADMIN, "--admin"], env=env,
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True, timeout=120)
        server = self.quart_rooms(database_url)
        server.start()
        try:
            api = Api(server.port)
            status, body = api.call("POST", "/api/auth/login", {"username": ADMIN, "password": PASSWORD})
            if status != 200:
                raise RuntimeError(f"admin login answered {status}: {body}")
            api.token = body["access_token"]
            for name in self.users:
                status, body = api.call("POST", "/api/admin/users", {"username": name, "password": PASSWORD})
                if status not in (201, 409):
                    raise RuntimeError(f"creating user {name} answered {status}: {body}")
            for name in rooms:
                status, body = api.call("POST", "/api/admin/rooms", {"name": name, "public": True})
                if status not in (201, 409):
                    raise RuntimeError(f"creating room {name} answered {status}: {body}")
            api.close()
        finally:
            server.stop()

    # One measurement ------------------------------------------------------------

    def measure(self, key: str, which: str, server: Server, cfg: dict[str, Any], profile: str = "") -> Run:
        base = {
            "url": f"http://127.0.0.1:{server.port}",
            "auth": which != "reference",
            "users": self.users,
            "password": PASSWORD,
            "connect_concurrency": self.plan.connect_concurrency,
            "warmup_s": self.plan.warmup_s,
            "duration_s": self.plan.duration_s,
            "drain_s": self.plan.drain_s,
        }
        out = None
        if profile and self.profile_dir is not None and (which != "reference" or self.profile_reference):
            out = self.profile_dir / (f"reference-{profile}" if which == "reference" else profile)
        load = wait_quiet(self.quiet_wait_s)
        log(f"{key}: {which} on port {server.port}")
        server.start()
        try:
            run = run_generator(base | cfg, server, self.gen_cpu, self.logdir, self.plan.settle_s, out)
        finally:
            server.stop()
        run.load_before = load
        self.runs.setdefault(key, {})[which] = run
        r = run.result
        headline = r.get("acked_per_s", r.get("deliveries_per_s", r.get("connects_per_s", 0.0)))
        log(f"{key}: {which}: {headline:,.0f}/s, server CPU {run.server_cpu_share:.0%} "
            f"(kernel {run.server_sys_s / max(run.wall_s, 1e-9):.0%}), "
            f"generator CPU {r.get('generator_cpu', 0):.0%}, cores busy "
            + " ".join(f"{c}:{v:.0%}" for c, v in sorted(run.core_busy.items()))
            + f", other processes {run.other_cores:.2f} cores")
        return run

    def fanout(self, sqlite_url: str) -> None:
        for receivers in self.plan.fanout_receivers:
            cfg = {"scenario": "fanout", "room": "fanout", "receivers": receivers,
                   "senders": self.plan.senders, "window": self.plan.window, "deflate": self.deflate}
            key = f"fanout-{receivers}"
            self.measure(key, "reference", self.reference(), cfg, profile=f"{key}.txt")
            self.measure(key, "quart-rooms", self.quart_rooms(sqlite_url), cfg, profile=f"{key}.txt")

    def connect(self, sqlite_url: str) -> None:
        n = self.plan.connect_clients
        rooms = [f"c{i:03d}" for i in range(-(-n // self.plan.connect_per_room))]
        for deflate in (False, True):
            cfg = {"scenario": "connect", "clients": n, "rooms": rooms,
                   "per_room": self.plan.connect_per_room, "deflate": deflate}
            key = "connect-deflate" if deflate else "connect"
            self.measure(key, "reference", self.reference(), cfg, profile=f"{key}.txt")
            self.measure(key, "quart-rooms", self.quart_rooms(sqlite_url), cfg, profile=f"{key}.txt")

    def many_rooms(self, sqlite_url: str, pg_url: str | None) -> None:
        rooms = [f"m{i:04d}" for i in range(self.plan.many_rooms)]
        cfg = {"scenario": "many_rooms", "rooms": rooms, "members": 2, "window": self.plan.many_window,
               "deflate": self.deflate}
        self.measure("many-rooms", "reference", self.reference(), cfg, profile="many-rooms.txt")
        self.measure("many-rooms", "quart-rooms", self.quart_rooms(sqlite_url), cfg, profile="many-rooms-sqlite.txt")
        if pg_url:
            self.measure("many-rooms", "quart-rooms-pg", self.quart_rooms(pg_url), cfg,
                         profile="many-rooms-pg.txt")


# ----------------------------------------------------------------------------- PostgreSQL

async def _pg(base: str, sql: str) -> str:
    import asyncpg  # the project's own dependency

    conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://") + "/postgres", timeout=5)
    try:
        if sql == "version":
            return str(await conn.fetchval("SHOW server_version"))
        await conn.execute(sql)
        return ""
    finally:
        await conn.close()


def pg(base: str, sql: str) -> str:
    return asyncio.run(_pg(base, sql))


# ----------------------------------------------------------------------------- facts and report

def machine_facts(pg_version: str, commit: str | None) -> list[tuple[str, str]]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])

    def pkg(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    def node_pkg(name: str) -> str:
        try:
            return json.loads((BENCH / "node_modules" / name / "package.json").read_text())["version"]
        except OSError:
            return "-"

    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", commit or "HEAD"], capture_output=True,
                         text=True).stdout.strip() or "?"
    dirty = "" if commit else subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "quart_rooms"],
                                             capture_output=True, text=True).stdout.strip()
    py = [f"{n} {pkg(n)}" for n in ("python-socketio", "python-engineio", "hypercorn", "wsproto", "h11", "quart",
                                     "sqlalchemy", "aiosqlite", "asyncpg", "uvloop", "pyjwt", "argon2-cffi")]
    return [
        ("date", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("machine", f"{cpu}, {os.cpu_count()} cores, {mem_kib / 1024 / 1024:.0f} GiB, "
                    f"Linux {platform.release()}"),
        ("pinning", "server on core 0, load generator on core 1 (taskset); PostgreSQL unpinned"),
        ("quart-rooms", f"{pkg('quart-rooms')} at {rev}"
                        + (" (working tree has uncommitted changes under quart_rooms/)" if dirty else "")),
        ("Python", f"{platform.python_version()}: " + ", ".join(py)),
        ("Node.js", f"{node}: socket.io-client {node_pkg('socket.io-client')}, ws {node_pkg('ws')}"),
        ("databases", f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL), PostgreSQL {pg_version or '-'}"),
    ]


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def report(bench: Bench, facts: list[tuple[str, str]], elapsed: float, argv: list[str]) -> str:
    plan = bench.plan
    out = [f"## Results ({'quick' if plan is QUICK else 'full'} run, {facts[0][1]})", ""]
    out += ["| fact | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in facts[1:]]
    out += ["", "| scenario | metric | reference | quart-rooms | ratio | target |", "|---|---|---:|---:|---:|---|"]
    rows = out

    def pair(key: str, which: str = "quart-rooms") -> tuple[Run | None, Run | None]:
        runs = bench.runs.get(key, {})
        return runs.get("reference"), runs.get(which)

    for receivers in plan.fanout_receivers:
        ref, qr = pair(f"fanout-{receivers}")
        if not ref or not qr:
            continue
        a, b = ref.result, qr.result
        name = f"fan-out R={receivers}"
        target = ""
        if receivers >= 100:
            ok = b["deliveries_per_s"] >= 1.5 * a["deliveries_per_s"]
            target = f">= 1.5x: {verdict(ok)}"
        rows.append(f"| {name} | deliveries/s | {fmt(a['deliveries_per_s'])} | {fmt(b['deliveries_per_s'])} | "
                    f"{ratio(b['deliveries_per_s'], a['deliveries_per_s'])} | {target} |")
        rows.append(f"| {name} | latency p50 / p99 (ms) | {fmt(a['latency']['p50_ms'], 1)} / "
                    f"{fmt(a['latency']['p99_ms'], 1)} | {fmt(b['latency']['p50_ms'], 1)} / "
                    f"{fmt(b['latency']['p99_ms'], 1)} | | |")
        for label, k, kmax in (("lost", "lost_total", "lost_max_per_receiver"),
                               ("out of order", "out_of_order_total", "out_of_order_max_per_receiver")):
            rows.append(f"| {name} | {label}: total (max per receiver) | {a[k]} ({a[kmax]}) | {b[k]} ({b[kmax]}) "
                        f"| | 0: {verdict(b[k] == 0)} |")
        cpu_a = ref.server_cpu_s / max(1, a["deliveries"]) * 1e6
        cpu_b = qr.server_cpu_s / max(1, b["deliveries"]) * 1e6
        rows.append(f"| {name} | server CPU per delivery (us) | {fmt(cpu_a, 1)} | {fmt(cpu_b, 1)} | "
                    f"{ratio(cpu_b, cpu_a)} | |")

    for key, label in (("connect", "connect, no deflate"), ("connect-deflate", "connect, deflate offered")):
        ref, qr = pair(key)
        if not ref or not qr:
            continue
        a, b = ref.result, qr.result
        n = a["clients"]
        ok = b["connects_per_s"] >= a["connects_per_s"]
        target = f">= 1.0x: {verdict(ok)}" if key == "connect" else ""
        rows.append(f"| {label} | connects/s ({n} clients, {a['concurrency']} in flight) | "
                    f"{fmt(a['connects_per_s'])} | {fmt(b['connects_per_s'])} | "
                    f"{ratio(b['connects_per_s'], a['connects_per_s'])} | {target} |")
        p99 = b["latency"]["p99_ms"] or 0
        rows.append(f"| {label} | connect + join p50 / p99 (ms) | {fmt(a['latency']['p50_ms'], 1)} / "
                    f"{fmt(a['latency']['p99_ms'], 1)} | {fmt(b['latency']['p50_ms'], 1)} / "
                    f"{fmt(p99, 1)} | | p99 < 250 ms: {verdict(p99 < 250)} |")
        per_a = (ref.rss_idle_kib - ref.rss_ready_kib) / max(1, a["connected"])
        per_b = (qr.rss_idle_kib - qr.rss_ready_kib) / max(1, b["connected"])
        target = f"<= 40 KiB: {verdict(per_b <= 40)}" if key == "connect" else ""
        rows.append(f"| {label} | RSS growth per idle connection (KiB) | {fmt(per_a, 1)} | {fmt(per_b, 1)} | "
                    f"{ratio(per_b, per_a)} | {target} |")
        errs_a = sum(a["errors"].values())
        errs_b = sum(b["errors"].values())
        rows.append(f"| {label} | failed connects | {errs_a} | {errs_b} | | |")

    runs = bench.runs.get("many-rooms", {})
    ref = runs.get("reference")
    for which, label in (("quart-rooms", "SQLite"), ("quart-rooms-pg", "PostgreSQL")):
        qr = runs.get(which)
        if not ref or not qr:
            continue
        a, b = ref.result, qr.result
        name = f"many rooms ({a['rooms']} x 2), {label}"
        target = ""
        if label == "SQLite":
            target = f">= 0.7x: {verdict(b['acked_per_s'] >= 0.7 * a['acked_per_s'])}"
        rows.append(f"| {name} | acked messages/s | {fmt(a['acked_per_s'])} | {fmt(b['acked_per_s'])} | "
                    f"{ratio(b['acked_per_s'], a['acked_per_s'])} | {target} |")
        rows.append(f"| {name} | ack latency p50 / p99 (ms) | {fmt(a['ack_latency']['p50_ms'], 1)} / "
                    f"{fmt(a['ack_latency']['p99_ms'], 1)} | {fmt(b['ack_latency']['p50_ms'], 1)} / "
                    f"{fmt(b['ack_latency']['p99_ms'], 1)} | | |")
        rows.append(f"| {name} | lost / out of order | {a['lost_total']} / {a['out_of_order_total']} | "
                    f"{b['lost_total']} / {b['out_of_order_total']} | | 0: "
                    f"{verdict(b['lost_total'] == 0 and b['out_of_order_total'] == 0)} |")

    # Details: what shows who was the bottleneck.
    rows += ["", "Per run: server worker CPU (share of its core over the measured window), load generator CPU, "
                 "busy share of each core (from /proc/stat, all processes and interrupts), CPU used by other "
             "processes of the machine meanwhile (in cores), errors.", "",
             "| run | server | server CPU (of it in the kernel) | generator CPU | cores busy | other processes "
             "| ack errors / connect errors |",
             "|---|---|---:|---:|---|---:|---|"]
    for key, runs in bench.runs.items():
        for which, run in runs.items():
            r = run.result
            errors = r.get("ack_errors") or r.get("errors") or {}
            busy = " / ".join(f"{v:.0%}" for _, v in sorted(run.core_busy.items()))
            kernel = run.server_sys_s / run.wall_s if run.wall_s else 0.0
            rows.append(f"| {key} | {which} | {run.server_cpu_share:.0%} ({kernel:.0%}) | "
                        f"{r.get('generator_cpu', 0):.0%} | "
                        f"{busy} | {run.other_cores:.2f} | {json.dumps(errors) if errors else '-'} |")

    rows += ["", "Notes:"]
    rows += [
        f"- Command: `python bench/run.py {' '.join(argv)}`".rstrip() + f"; {elapsed:.0f} s in all.",
        f"- Each server was started fresh for each row group: one Hypercorn worker, both on the "
        f"{bench.loop} event loop (`{' '.join(bench.loop_flag) or 'default'}` for quart-rooms); "
        f"warm-up {plan.warmup_s:g} s, then {plan.duration_s:g} s measured.",
        "- quart-rooms ran with raised limits (env): "
        + ", ".join(f"`{k}={v}`" for k, v in QR_LIMITS.items()) + "; accounts from `quart-rooms create-user` "
        f"and the admin API, {len(bench.users)} bench users; the generator signs in over HTTP for real tokens, "
        "and sockets of one user share its token.",
        f"- fan-out: {plan.senders} senders with at most {plan.window} messages in flight each (done when the "
        "message returns to its sender); deliveries count every `message` event at any socket of the room "
        "(receivers and senders); latency is send to arrival at each socket. "
        + ("permessage-deflate offered (--deflate)." if bench.deflate else "No permessage-deflate."),
        f"- connect: at most {plan.connect_concurrency} connects in flight, each a fresh websocket with the token "
        f"and a join of one of {-(-plan.connect_clients // plan.connect_per_room)} rooms ({plan.connect_per_room} "
        "users per room); RSS growth is worker RSS after the last join and "
        f"{plan.settle_s:g} s idle, minus RSS before the first connect, per connected socket. 'deflate offered' "
        "offers permessage-deflate like a browser (Hypercorn always accepts it).",
        f"- many rooms: every member keeps {plan.many_window} message in flight and sends the next on its ack; "
        "quart-rooms acks after the commit (group commit); the reference acks after its broadcast (no storage). "
        "Both quart-rooms rows are compared to the same reference run. PostgreSQL runs unpinned on the same "
        "2 cores, so it competes with both the server and the generator.",
        "- Absolute figures drift 20-40% between runs on this kind of machine; compare within one run.",
    ]
    noisy = [f"{key} {which} ({run.other_cores:.2f})" for key, runs in bench.runs.items()
             for which, run in runs.items() if run.other_cores > 0.1]
    if noisy:
        rows.append("- **Other processes used CPU during some runs** (cores): " + ", ".join(noisy)
                    + "; those figures are less trustworthy.")
    rows += [f"- {n}" for n in bench.notes]
    return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="quart-rooms vs a bare python-socketio reference server.")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about a minute)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="event loop (Hypercorn worker class) of both servers (default: uvloop, "
                             "quart-rooms' own default)")
    parser.add_argument("--commit", help="run quart-rooms from this commit (a snapshot) instead of the working tree")
    parser.add_argument("--only", default="fanout,connect,many_rooms",
                        help="comma-separated scenarios: fanout, connect, many_rooms")
    parser.add_argument("--receivers", help="fan-out receiver counts, comma-separated (default 10,100,500)")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL row")
    parser.add_argument("--pg", default="postgresql+asyncpg://postgres@127.0.0.1:5432",
                        help="PostgreSQL server (a database is created and dropped there)")
    parser.add_argument("--profile", metavar="DIR",
                        help="record py-spy profiles (collapsed stacks, .txt) of the quart-rooms worker into DIR; "
                             "summarise them with bench/profile_summary.py")
    parser.add_argument("--deflate", action="store_true",
                        help="offer permessage-deflate in the fan-out and many-rooms scenarios too (as browsers do)")
    parser.add_argument("--profile-reference", action="store_true", help="with --profile, profile the reference too")
    parser.add_argument("--quiet-wait", type=float, default=60.0, metavar="S",
                        help="before each run, wait up to S seconds for other processes to go quiet")
    parser.add_argument("--out", default=str(BENCH / "results" / "latest.md"), help="where to write the table")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    if args.receivers:
        plan.fanout_receivers = [int(x) for x in args.receivers.split(",")]
    if args.duration:
        plan.duration_s = args.duration
    scenarios = set(args.only.split(","))
    if unknown := scenarios - {"fanout", "connect", "many_rooms"}:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    for tool in ("node", "taskset"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is needed")
    if len(os.sched_getaffinity(0)) < 2:
        parser.error("needs 2 cores: one for the server, one for the load generator")
    if not (BENCH / "node_modules" / "socket.io-client").exists():
        log("installing the load generator's packages (npm ci)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True)
    cores = sorted(os.sched_getaffinity(0))

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="quart-rooms-bench-"))
    logdir = workdir / "logs"
    logdir.mkdir()
    log(f"work folder and server logs: {workdir}")
    bench = Bench(plan=plan, loop=args.loop, workdir=workdir, logdir=logdir, server_cpu=cores[0],
                  gen_cpu=cores[1], pg_base=args.pg, profile_dir=Path(args.profile).resolve() if args.profile else None)
    bench.users = [f"bench{i:03d}" for i in range(plan.users)]
    bench.quiet_wait_s = args.quiet_wait
    bench.profile_reference = args.profile_reference
    bench.deflate = args.deflate
    if args.commit:
        bench.src = workdir / "src"
        bench.src.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.commit, "quart_rooms"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(bench.src)], input=archive, check=True)
    bench.detect_loop_flag()
    sqlite_url = f"sqlite+aiosqlite:///{workdir / 'instance' / 'bench.db'}"
    (workdir / "instance").mkdir()
    rooms = (["fanout"] + [f"c{i:03d}" for i in range(-(-plan.connect_clients // plan.connect_per_room))]
             + [f"m{i:04d}" for i in range(plan.many_rooms)])

    pg_url = None
    pg_version = ""
    if "many_rooms" in scenarios and not args.no_postgres:
        try:
            pg_version = pg(args.pg, "version")
            bench.pg_db = f"quart_rooms_bench_{os.getpid()}"
            pg(args.pg, f'CREATE DATABASE "{bench.pg_db}"')
            pg_url = f"{args.pg}/{bench.pg_db}"
        except Exception as exc:  # no PostgreSQL here: report without that row
            bench.notes.append(f"PostgreSQL row skipped: {exc!r}")
            log(f"PostgreSQL not available ({exc!r}); skipping that row")
    try:
        log("seeding SQLite: admin via the CLI, users and rooms via the admin API")
        bench.seed(sqlite_url, rooms)
        if pg_url:
            log("seeding PostgreSQL")
            bench.seed(pg_url, [r for r in rooms if r.startswith("m")])
        if "fanout" in scenarios:
            bench.fanout(sqlite_url)
        if "connect" in scenarios:
            bench.connect(sqlite_url)
        if "many_rooms" in scenarios:
            bench.many_rooms(sqlite_url, pg_url)
    finally:
        if bench.pg_db:
            try:
                pg(args.pg, f'DROP DATABASE IF EXISTS "{bench.pg_db}" WITH (FORCE)')
            except Exception as exc:
                log(f"could not drop database {bench.pg_db}: {exc!r}")
    elapsed = time.monotonic() - started
    text = report(bench, machine_facts(pg_version, args.commit), elapsed, argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps(
        {key: {which: {"result": r.result, "server_cpu_s": r.server_cpu_s, "wall_s": r.wall_s,
                       "core_busy": r.core_busy, "other_cores": r.other_cores, "server_sys_s": r.server_sys_s,
                       "rss_ready_kib": r.rss_ready_kib, "rss_idle_kib": r.rss_idle_kib}
               for which, r in runs.items()} for key, runs in bench.runs.items()}, indent=1))
    print(text)
    log(f"table written to {out}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
