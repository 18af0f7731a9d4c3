#!/usr/bin/env python3
"""The quart-rooms benchmark: reference server vs quart-rooms, same invocation, same generator.

    cd bench && npm ci && cd .. && python bench/run.py [--quick] [--only SCENARIOS] [--loop asyncio]

Run it with the Python that has quart-rooms installed (the project's venv). For
every scenario it starts each server fresh on its own 127.0.0.1 port, pinned
to one core, runs the Node.js load generator pinned to the other core for a
bounded time, stops what it started by PID, and at the end prints a Markdown
table (also written to bench/results/latest.md unless --out says otherwise).
Scenarios: fanout, connect, many_rooms (with SQLite synchronous FULL and
NORMAL, and PostgreSQL), signin (a sign-in burst), storm (a reconnect storm
after a restart) and two_node (fan-out over two nodes on PostgreSQL + Redis).
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
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
# Everything else is the default: max_pending_sign_ins (64), login_failures_per_account
# (5), sqlite_synchronous (FULL; the many-rooms scenario also runs NORMAL), access_log.
QR_LIMITS = {
    "QUART_ROOMS_MESSAGES_PER_10S": "1000000000",
    "QUART_ROOMS_MAX_SOCKETS_PER_USER": "1000000",
    "QUART_ROOMS_LOGIN_FAILURES_PER_ADDRESS": "1000000",
    # The storm's sender is one account in every storm room (100 joins at load, 100 again after the restart).
    "QUART_ROOMS_JOINS_PER_10S": "1000000",
    "QUART_ROOMS_LOG_LEVEL": "WARNING",
}
SCENARIOS = ("fanout", "connect", "many_rooms", "signin", "storm", "two_node")


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
    signin_users: int = 500  # distinct accounts of the sign-in burst (also the storm's pages' accounts)
    storm_clients: int = 2000  # pages, each its own sign-in session, one socket in one room
    storm_per_room: int = 20
    storm_send_rate: float = 100.0  # messages/s the sender posts, round robin over the storm's rooms
    storm_send_window: int = 16
    storm_pre_s: float = 2.0  # posting before the restart
    storm_post_s: float = 2.0  # posting after every page is back
    storm_back_deadline_s: float = 60.0
    two_node_receivers: list[int] = field(default_factory=lambda: [100, 500])


FULL = Plan(fanout_receivers=[10, 100, 500])
QUICK = Plan(fanout_receivers=[10, 100], warmup_s=1.0, duration_s=3.0, drain_s=3.0, connect_clients=300,
             many_rooms=100, users=20, settle_s=1.0, signin_users=100, storm_clients=300, storm_send_rate=30.0,
             storm_back_deadline_s=30.0, two_node_receivers=[100])


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


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    for child in children(pid):
        found += [child, *descendants(child)]
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
    """One server process pinned to a core (or cores), and the worker that serves.

    `quart-rooms serve` with one worker serves in its own process (no Hypercorn
    parent any more), and so does the reference; an older `serve` (--commit) runs
    Hypercorn's `run()`, whose worker is a spawned child: the worker is that child
    when there is one, else the process itself. CPU and RSS are the worker's (all
    its threads: argon2 and aiosqlite included).
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, cpu: str,
                 logdir: Path, ready_path: str) -> None:
        self.name, self.argv, self.env, self.port, self.cpu = name, argv, env, port, cpu
        self.ready_path = ready_path
        self.log_path = logdir / f"{name}-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker = 0
        self.started_s = 0.0  # seconds from exec to the first ready answer, last start
        self.stopped_s = 0.0  # seconds from SIGTERM to exit, last stop
        self.killed = False  # the last stop needed SIGKILL

    def start(self, timeout: float = 60.0) -> None:
        t0 = time.monotonic()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                ["taskset", "-c", self.cpu, *self.argv], env=self.env, cwd=BENCH,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.worker = 0
        end = t0 + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if http_status("127.0.0.1", self.port, self.ready_path) == 200:
                self.started_s = time.monotonic() - t0
                spawned = [c for c in descendants(self.proc.pid) if "spawn_main" in cmdline(c)]
                self.worker = spawned[0] if spawned else self.proc.pid
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""

    def rss_kib(self) -> int:
        try:
            with open(f"/proc/{self.worker}/statm") as f:
                return int(f.read().split()[1]) * PAGE_KIB
        except OSError:
            return 0

    def cpu_s(self) -> float:
        return proc_cpu_s(self.worker)

    def sys_s(self) -> float:
        return proc_cpu_split(self.worker)[1]

    def stop(self, timeout: float = 25.0) -> float:
        """SIGTERM to the process (quart-rooms drains within shutdown_timeout, 10 s by default);
        SIGKILL by PID for it and anything it started if that fails. Returns the seconds it took."""
        if self.proc is None:
            return 0.0
        left = descendants(self.proc.pid)
        t0 = time.monotonic()
        self.killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.proc.pid}) did not stop within {timeout} s of SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait(timeout=5)
                self.killed = True
        self.stopped_s = time.monotonic() - t0
        for pid in left:
            end = time.monotonic() + 3
            while alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if alive(pid) and cmdline(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None
        return self.stopped_s


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


def listen_overflows() -> int:
    """TcpExt ListenOverflows of the machine (/proc/net/netstat): connections a full accept queue dropped."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table.get("ListenOverflows", 0))
    return 0


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
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.token = ""
        self.retry_after = 0.0  # of the last answer

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        res = self.conn.getresponse()
        raw = res.read()
        self.retry_after = float(res.getheader("Retry-After") or 0)
        try:
            return res.status, (json.loads(raw) if raw else None)
        except ValueError:
            return res.status, raw[:200].decode(errors="replace")

    def close(self) -> None:
        self.conn.close()


# ----------------------------------------------------------------------------- the load generator

@dataclass
class Run:
    """What one generator run measured, with the server's side of it."""

    result: dict[str, Any]
    server_cpu_s: float = 0.0  # every node of the run together
    wall_s: float = 0.0
    rss_ready_kib: int = 0
    rss_idle_kib: int = 0
    profile: str = ""
    core_busy: dict[int, float] = field(default_factory=dict)
    server_sys_s: float = 0.0  # of server_cpu_s, in the kernel
    other_cores: float = 0.0  # CPU used by processes other than the servers and the generator
    load_before: float = 0.0
    nodes: int = 1
    backing_cpu_s: dict[str, float] = field(default_factory=dict)  # PostgreSQL / Redis over the window
    restart: dict[str, float] = field(default_factory=dict)  # storm: the old server's stop, the new one's start
    listen_overflows: int = 0  # machine-wide, from the generator's start to its end

    @property
    def server_cpu_share(self) -> float:
        """Share of one core (several nodes on one core add up)."""
        return self.server_cpu_s / self.wall_s if self.wall_s else 0.0


def backing_processes(pg_db: str, redis: bool) -> dict[str, list[int]]:
    """PostgreSQL backends serving the bench's database (their titles name it) and, when the run
    uses Redis, redis-server (the whole server: other users' work on it counts too)."""
    found: dict[str, list[int]] = {}
    if not pg_db and not redis:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        line = cmdline(int(entry))
        if pg_db and line.startswith("postgres: ") and f" {pg_db} " in line:
            found.setdefault("postgres", []).append(int(entry))
        elif redis and line.startswith("redis-server"):
            found.setdefault("redis", []).append(int(entry))
    return found


def run_generator(cfg: dict[str, Any], servers: list[Server], gen_cpu: int, logdir: Path, settle_s: float,
                  profile: Path | None = None, pg_db: str = "", redis: bool = False) -> Run:
    cfg = dict(cfg, deadline_s=cfg.get("deadline_s", 240))
    cfg_path = logdir / f"loadgen-{cfg['scenario']}-{os.getpid()}.json"
    cfg_path.write_text(json.dumps(cfg))  # a file: the storm's refresh tokens are too long for one argument
    argv = ["taskset", "-c", str(gen_cpu), "node", str(BENCH / "loadgen.js"), f"@{cfg_path}"]
    with open(logdir / "loadgen.log", "ab") as err:
        proc = subprocess.Popen(argv, cwd=BENCH, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    lines: queue.Queue[bytes | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def tell(word: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(word.encode() + b"\n")
        proc.stdin.flush()

    def cpu() -> float:
        return sum(s.cpu_s() for s in servers)

    def sys_cpu() -> float:
        return sum(s.sys_s() for s in servers)

    threading.Thread(target=pump, daemon=True).start()
    run = Run(result={}, nodes=len(servers))
    overflows0 = listen_overflows()
    spy: subprocess.Popen[bytes] | None = None
    cpu0 = t0 = gen0 = sys0 = 0.0
    back0: dict[int, float] = {}
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
                run.rss_ready_kib = servers[0].rss_kib()
            elif kind == "measure_start":
                cpu0, gen0, t0, cores0 = cpu(), proc_cpu_s(proc.pid), time.monotonic(), core_times()
                sys0 = sys_cpu()
                back0 = {pid: proc_cpu_s(pid) for pids in backing_processes(pg_db, redis).values() for pid in pids}
                if profile is not None:
                    spy = start_py_spy(servers[0].worker, profile, cfg, gen_cpu)
                    run.profile = str(profile)
            elif kind == "measure_end":
                run.server_cpu_s = cpu() - cpu0
                run.server_sys_s = sys_cpu() - sys0
                run.wall_s = time.monotonic() - t0
                cores1 = core_times()
                gen_s = proc_cpu_s(proc.pid) - gen0
                for which, pids in backing_processes(pg_db, redis).items():
                    run.backing_cpu_s[which] = sum(proc_cpu_s(pid) - back0.get(pid, 0.0) for pid in pids)
                run.other_cores = max(0.0, busy_cores(cores0, cores1)
                                      - (run.server_cpu_s + gen_s + sum(run.backing_cpu_s.values())) / run.wall_s)
                run.core_busy = {c: (cores1[c][0] - b0) / max(1, cores1[c][1] - t0_) for c, (b0, t0_) in cores0.items()}
            elif kind == "idle":
                time.sleep(settle_s)
                run.rss_idle_kib = servers[0].rss_kib()
                tell("go")
            elif kind == "restart":
                # The storm: stop the server as an operator would (SIGTERM: it drains, closes
                # its sockets, exits), start it again on the same port, say when it answers.
                tell("stopping")
                log(f"storm: restarting {servers[0].name} (SIGTERM to pid {servers[0].proc.pid if servers[0].proc else '?'})")
                run.restart["stop_s"] = servers[0].stop()
                run.restart["killed"] = float(servers[0].killed)
                servers[0].start()
                run.restart["start_s"] = servers[0].started_s
                log(f"storm: stopped in {run.restart['stop_s']:.2f} s, answering again {servers[0].started_s:.2f} s "
                    "after its start")
                tell("up")
            elif kind == "result":
                run.result = msg["result"]
            elif kind == "error":
                raise RuntimeError(f"load generator failed: {msg.get('error')}")
        proc.wait(timeout=15)
        run.listen_overflows = listen_overflows() - overflows0
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
    signin_users: list[str] = field(default_factory=list)
    storm_refresh: list[str] = field(default_factory=list)  # one sign-in session per storm page, then the sender's
    pg_db: str = ""
    redis_url: str = ""
    redis_prefix: str = ""
    deflate: bool = False
    profile_reference: bool = False
    quiet_wait_s: float = 60.0
    src: Path | None = None
    loop_flag: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)  # --qr-env
    seed_problems: dict[str, int] = field(default_factory=dict)  # 5xx and 429 met while seeding
    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(32))

    # Servers ----------------------------------------------------------------

    def qr_env(self, database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
        env.update(QR_LIMITS)
        env.update(self.extra_env)
        env.update(extra or {})
        env["QUART_ROOMS_INSTANCE_PATH"] = str(self.workdir / "instance")
        env["QUART_ROOMS_JWT_SECRET"] = self.jwt_secret
        env["QUART_ROOMS_DATABASE_URL"] = database_url
        if self.src is not None:  # a snapshot of a commit instead of the working tree
            env["PYTHONPATH"] = str(self.src) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def redis_env(self) -> dict[str, str]:
        """Redis for several nodes: a channel (and so key prefix) of this run's own, dropped afterwards."""
        return {"QUART_ROOMS_REDIS_URL": self.redis_url, "QUART_ROOMS_REDIS_CHANNEL": self.redis_prefix}

    def detect_loop_flag(self) -> None:
        """`serve --loop X` where the CLI has it; older ones know only `--uvloop` (asyncio by default)."""
        # cwd=BENCH: `python -m` puts the current folder first on sys.path, and from the project's
        # root that would be the working tree's quart_rooms, not a --commit snapshot's.
        helptext = subprocess.run([sys.executable, "-m", "quart_rooms.cli", "serve", "--help"], cwd=BENCH,
                                  env=self.qr_env(""), capture_output=True, text=True, timeout=60).stdout
        if "--loop" in helptext:
            self.loop_flag = ["--loop", self.loop]
        elif self.loop == "uvloop":
            self.loop_flag = ["--uvloop"]

    def quart_rooms(self, database_url: str, extra: dict[str, str] | None = None, cpu: str = "",
                    name: str = "quart-rooms") -> Server:
        port = free_port()
        argv = [sys.executable, "-m", "quart_rooms.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                *self.loop_flag]
        return Server(name, argv, self.qr_env(database_url, extra), port, cpu or str(self.server_cpu),
                      self.logdir, "/readyz")

    def reference(self) -> Server:
        port = free_port()
        argv = [sys.executable, str(BENCH / "reference_server.py"), "--port", str(port), "--loop", self.loop]
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
        return Server("reference", argv, env, port, str(self.server_cpu), self.logdir,
                      "/socket.io/?EIO=4&transport=polling")

    # Seeding through the CLI and the HTTP API ------------------------------------

    def _calls(self, port: int, token: str, jobs: list[tuple[str, str, Any]], threads: int,
               ok: tuple[int, ...]) -> list[Any]:
        """Run (method, path, body) calls on `threads` keep-alive connections; retry 429 after
        Retry-After and a 5xx up to 3 times (each counted in the notes); return the bodies."""

        def one(job: tuple[str, str, Any], api: Api) -> Any:
            method, path, body = job
            fives = 0
            for _ in range(200):
                status, answer = api.call(method, path, body)
                if status in ok:
                    return answer
                if status == 429:
                    count(f"{method} {path}: 429")
                    time.sleep(max(0.2, api.retry_after))
                    continue
                if status >= 500 and fives < 3:
                    fives += 1
                    count(f"{method} {path}: {status}")
                    time.sleep(0.5)
                    continue
                raise RuntimeError(f"{method} {path} answered {status}: {answer}")
            raise RuntimeError(f"{method} {path}: still refused after 200 tries")

        local = threading.local()
        lock = threading.Lock()

        def count(key: str) -> None:
            with lock:
                self.seed_problems[key] = self.seed_problems.get(key, 0) + 1

        def run(job: tuple[str, str, Any]) -> Any:
            if not hasattr(local, "api"):
                local.api = Api(port)
                local.api.token = token
            return one(job, local.api)

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            return list(pool.map(run, jobs))

    def seed(self, database_url: str, rooms: list[str], users: list[str], sessions: list[str] | None = None) -> None:
        """The admin through the CLI; users, rooms and (for the storm) sign-in sessions through HTTP.

        The seeding server may use both cores (nothing is measured here); users are created 8 at a
        time (argon2 in the server's thread pool), sessions signed in 4 at a time, below
        max_pending_sign_ins. `sessions` names the account of each session to open; their refresh
        tokens go to self.storm_refresh.
        """
        env = self.qr_env(database_url)
        subprocess.run([sys.executable, "-m", "quart_rooms.cli", "create-user", ADMIN, "--admin"], env=env, cwd=BENCH,
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True, timeout=120)
        server = self.quart_rooms(database_url, cpu=f"{self.server_cpu},{self.gen_cpu}", name="quart-rooms-seed")
        server.start()
        try:
            api = Api(server.port)
            status, body = api.call("POST", "/api/auth/login", {"username": ADMIN, "password": PASSWORD})
            if status != 200:
                raise RuntimeError(f"admin login answered {status}: {body}")
            api.close()
            token = body["access_token"]
            t0 = time.monotonic()
            self._calls(server.port, token, [("POST", "/api/admin/users", {"username": name, "password": PASSWORD})
                                             for name in users], 8, (201, 409))
            self._calls(server.port, token, [("POST", "/api/admin/rooms", {"name": name, "public": True})
                                             for name in rooms], 4, (201, 409))
            log(f"seeded {len(users)} users and {len(rooms)} rooms in {time.monotonic() - t0:.1f} s")
            if sessions:
                t0 = time.monotonic()
                answers = self._calls(server.port, "", [("POST", "/api/auth/login",
                                                         {"username": name, "password": PASSWORD})
                                                        for name in sessions], 4, (200,))
                self.storm_refresh = [a["refresh_token"] for a in answers]
                log(f"signed in {len(sessions)} sessions for the storm in {time.monotonic() - t0:.1f} s")
        finally:
            server.stop()

    # One measurement ------------------------------------------------------------

    def measure(self, key: str, which: str, servers: Server | list[Server], cfg: dict[str, Any],
                profile: str = "", redis: bool = False, pg: bool = False) -> Run:
        servers = servers if isinstance(servers, list) else [servers]
        base = {
            "urls": [f"http://127.0.0.1:{s.port}" for s in servers],
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
        log(f"{key}: {which} on port(s) {', '.join(str(s.port) for s in servers)}")
        started: list[Server] = []
        try:
            for server in servers:
                server.start()
                started.append(server)
            run = run_generator(base | cfg, servers, self.gen_cpu, self.logdir, self.plan.settle_s, out,
                                pg_db=self.pg_db if pg else "", redis=redis)
        finally:
            for server in started:
                server.stop()
        run.load_before = load
        self.runs.setdefault(key, {})[which] = run
        r = run.result
        headline = r.get("acked_per_s", r.get("deliveries_per_s", r.get("connects_per_s",
                         r.get("sign_ins_per_s", 0.0))))
        if "all_back_after_up_s" in r:
            log(f"{key}: {which}: {r['back']}/{r['pages']} pages back {r['all_back_after_up_s']:.2f} s after the "
                f"server answered; lost {r['lost_total']}, doubled {r['doubled_total']}, out of order "
                f"{r['out_of_order_total']}; refresh {r.get('refresh')}; connect errors {r.get('connect_errors')}")
        else:
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
        self.measure("many-rooms", "quart-rooms-normal",
                     self.quart_rooms(sqlite_url, {"QUART_ROOMS_SQLITE_SYNCHRONOUS": "NORMAL"}), cfg,
                     profile="many-rooms-sqlite-normal.txt")
        if pg_url:
            self.measure("many-rooms", "quart-rooms-pg", self.quart_rooms(pg_url), cfg,
                         profile="many-rooms-pg.txt", pg=True)

    def signin(self, sqlite_url: str) -> None:
        """Every sign-in user at once over HTTP (quart-rooms only: the reference has no accounts)."""
        cfg = {"scenario": "signin", "signin_users": self.signin_users, "max_attempts": 60,
               "max_retry_after_s": 5, "deadline_s": 300, "duration_s": 20}
        self.measure("signin", "quart-rooms", self.quart_rooms(sqlite_url), cfg, profile="signin.txt")

    def storm(self, sqlite_url: str) -> None:
        plan = self.plan
        n = plan.storm_clients
        cfg = {"scenario": "storm", "clients": n, "rooms": storm_rooms(plan), "per_room": plan.storm_per_room,
               "send_rate": plan.storm_send_rate, "send_window": plan.storm_send_window,
               "pre_s": plan.storm_pre_s, "post_s": plan.storm_post_s,
               "back_deadline_s": plan.storm_back_deadline_s, "send_drain_s": 120, "settle_s": 30,
               "deadline_s": 900, "duration_s": 15}
        self.measure("storm", "reference", self.reference(), cfg, profile="storm.txt")
        self.measure("storm", "quart-rooms", self.quart_rooms(sqlite_url), cfg | {"refresh_tokens": self.storm_refresh},
                     profile="storm.txt")

    def two_node(self, pg_url: str) -> None:
        """Fan-out on PostgreSQL + Redis: one node, then two nodes (both on the server core) sharing the load."""
        env = self.redis_env()
        for receivers in self.plan.two_node_receivers:
            cfg = {"scenario": "fanout", "room": "fanout", "receivers": receivers,
                   "senders": self.plan.senders, "window": self.plan.window, "deflate": self.deflate}
            key = f"two-node-{receivers}"
            self.measure(key, "one-node", self.quart_rooms(pg_url, env, name="node-a"), cfg,
                         profile=f"{key}-one.txt", redis=True, pg=True)
            self.measure(key, "two-nodes", [self.quart_rooms(pg_url, env, name="node-a"),
                                            self.quart_rooms(pg_url, env, name="node-b")], cfg,
                         profile=f"{key}-two-node-a.txt", redis=True, pg=True)


def storm_rooms(plan: Plan) -> list[str]:
    return [f"s{i:03d}" for i in range(-(-plan.storm_clients // plan.storm_per_room))]


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

def filesystem(path: Path) -> str:
    """The type and device of the filesystem holding `path` (from /proc/mounts)."""
    best = ("", "?", "?")
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, kind = line.split()[:3]
            if str(path).startswith(mnt) and len(mnt) >= len(best[0]):
                best = (mnt, kind, dev)
    return f"{best[1]} on {best[2]}"


def redis_version(url: str) -> str:
    if not url:
        return "-"
    try:
        import redis

        client = redis.Redis.from_url(url)
        try:
            return str(client.info("server").get("redis_version", "?"))
        finally:
            client.close()
    except Exception:
        return "?"


def machine_facts(pg_version: str, commit: str | None, workdir: Path, redis_url: str = "") -> list[tuple[str, str]]:
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
                                     "sqlalchemy", "aiosqlite", "asyncpg", "uvloop", "pyjwt", "argon2-cffi",
                                     "redis", "limits")]
    return [
        ("date", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("machine", f"{cpu}, {os.cpu_count()} cores, {mem_kib / 1024 / 1024:.0f} GiB, "
                    f"Linux {platform.release()}"),
        ("pinning", "server on core 0 (both nodes in the two-node rows), load generator on core 1 (taskset); "
                    "PostgreSQL and Redis unpinned"),
        ("quart-rooms", f"{pkg('quart-rooms')} at {rev}"
                        + (" (working tree has uncommitted changes under quart_rooms/)" if dirty else "")),
        ("Python", f"{platform.python_version()}: " + ", ".join(py)),
        ("Node.js", f"{node}: socket.io-client {node_pkg('socket.io-client')}, ws {node_pkg('ws')}"),
        ("databases", f"SQLite {sqlite3.sqlite_version} (WAL; synchronous=FULL, the default, unless a row says "
                      f"NORMAL; the file on {filesystem(workdir)}), PostgreSQL {pg_version or '-'}, "
                      f"Redis {redis_version(redis_url)}"),
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


def counts(d: dict[str, int] | None, keys: tuple[str, ...] = ("2xx", "429", "5xx")) -> str:
    """'a / b / c' of the keys, then '+ n other' for anything else."""
    d = d or {}
    main = " / ".join(str(d.get(k, 0)) for k in keys)
    other = sum(v for k, v in d.items() if k not in keys)
    return main + (f" (+{other} other)" if other else "")


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

    def p50_99(h: dict[str, Any] | None) -> str:
        if not h:
            return "-"
        return f"{fmt(h.get('p50_ms'), 1)} / {fmt(h.get('p99_ms'), 1)}"

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
        rows.append(f"| {name} | latency p50 / p99 (ms) | {p50_99(a['latency'])} | {p50_99(b['latency'])} | | |")
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
        target = f"p99 < 250 ms: {verdict(p99 < 250)}" if key == "connect" else ""
        rows.append(f"| {label} | connect + join p50 / p99 (ms) | {p50_99(a['latency'])} | {p50_99(b['latency'])} "
                    f"| | {target} |")
        per_a = (ref.rss_idle_kib - ref.rss_ready_kib) / max(1, a["connected"])
        per_b = (qr.rss_idle_kib - qr.rss_ready_kib) / max(1, b["connected"])
        target = f"<= 40 KiB: {verdict(per_b <= 40)}" if key == "connect" else ""
        rows.append(f"| {label} | RSS growth per idle connection (KiB) | {fmt(per_a, 1)} | {fmt(per_b, 1)} | "
                    f"{ratio(per_b, per_a)} | {target} |")
        cpu_a = ref.server_cpu_s / max(1, a["connected"]) * 1e3
        cpu_b = qr.server_cpu_s / max(1, b["connected"]) * 1e3
        rows.append(f"| {label} | server CPU per connect + join (ms) | {fmt(cpu_a, 2)} | {fmt(cpu_b, 2)} | "
                    f"{ratio(cpu_b, cpu_a)} | |")
        errs_a = sum(a["errors"].values())
        errs_b = sum(b["errors"].values())
        rows.append(f"| {label} | failed connects | {errs_a} | {errs_b} | | 0: {verdict(errs_b == 0)} |")

    runs = bench.runs.get("many-rooms", {})
    ref = runs.get("reference")
    for which, label in (("quart-rooms", "SQLite FULL"), ("quart-rooms-normal", "SQLite NORMAL"),
                         ("quart-rooms-pg", "PostgreSQL")):
        qr = runs.get(which)
        if not ref or not qr:
            continue
        a, b = ref.result, qr.result
        name = f"many rooms ({a['rooms']} x 2), {label}"
        target = ""
        if which == "quart-rooms":
            target = f">= 0.7x: {verdict(b['acked_per_s'] >= 0.7 * a['acked_per_s'])}"
        rows.append(f"| {name} | acked messages/s | {fmt(a['acked_per_s'])} | {fmt(b['acked_per_s'])} | "
                    f"{ratio(b['acked_per_s'], a['acked_per_s'])} | {target} |")
        rows.append(f"| {name} | ack latency p50 / p99 (ms) | {p50_99(a['ack_latency'])} | "
                    f"{p50_99(b['ack_latency'])} | | |")
        cpu_a = ref.server_cpu_s / max(1, a["acked"]) * 1e6
        cpu_b = qr.server_cpu_s / max(1, b["acked"]) * 1e6
        rows.append(f"| {name} | server CPU per acked message (us) | {fmt(cpu_a)} | {fmt(cpu_b)} | "
                    f"{ratio(cpu_b, cpu_a)} | |")
        rows.append(f"| {name} | lost / out of order | {a['lost_total']} / {a['out_of_order_total']} | "
                    f"{b['lost_total']} / {b['out_of_order_total']} | | 0: "
                    f"{verdict(b['lost_total'] == 0 and b['out_of_order_total'] == 0)} |")
    full, normal = runs.get("quart-rooms"), runs.get("quart-rooms-normal")
    if full and normal:
        f_, n_ = full.result, normal.result
        rows.append(f"| many rooms, SQLite | FULL / NORMAL: acked messages/s (the cost of durability) | | "
                    f"{fmt(f_['acked_per_s'])} / {fmt(n_['acked_per_s'])} | {ratio(f_['acked_per_s'], n_['acked_per_s'])}"
                    " | |")

    signin = bench.runs.get("signin", {}).get("quart-rooms")
    if signin:
        r = signin.result
        name = f"sign-in burst ({r['users']} users at once)"
        fives = r["all_attempts"].get("5xx", 0)
        rows.append(f"| {name} | sign-ins/s (until the last one signed in) | - | {fmt(r['sign_ins_per_s'], 1)} | | |")
        rows.append(f"| {name} | signed in / gave up | - | {r['signed_in']} / {r['gave_up']} | | "
                    f"all: {verdict(r['gave_up'] == 0)} |")
        rows.append(f"| {name} | first attempts: 2xx / 429 / 5xx | - | {counts(r['first_attempt'])} | | |")
        rows.append(f"| {name} | all attempts: 2xx / 429 / 5xx | - | {counts(r['all_attempts'])} | | "
                    f"5xx 0: {verdict(fives == 0)} |")
        rows.append(f"| {name} | request latency p50 / p99 (ms) | - | {p50_99(r['request_latency'])} | | |")
        rows.append(f"| {name} | first attempt to signed in p50 / p99 (ms), retries included | - | "
                    f"{p50_99(r['user_latency'])} | | |")
        rows.append(f"| {name} | server CPU per sign-in (ms) | - | "
                    f"{fmt(signin.server_cpu_s / max(1, r['signed_in']) * 1e3, 1)} | | |")

    ref, qr = pair("storm")
    if ref or qr:
        a = ref.result if ref else {}
        b = qr.result if qr else {}
        some = b or a
        name = f"reconnect storm ({some['clients']} pages, {some['rooms']} rooms)"

        def both(f: Any) -> str:
            return f"{f(a, ref) if a else '-'} | {f(b, qr) if b else '-'}"

        rows.append(f"| {name} | all back, from SIGTERM (s) | {both(lambda r, _: fmt(r['all_back_after_restart_s'], 2))} "
                    "| | |")
        rows.append(f"| {name} | all back, from the new server's first answer (s) | "
                    f"{both(lambda r, _: fmt(r['all_back_after_up_s'], 2))} | "
                    f"{ratio(b.get('all_back_after_up_s'), a.get('all_back_after_up_s'))} | |")
        def down(run: Run) -> str:
            killed = " (SIGKILL)" if run.restart.get("killed") else ""
            return f"{fmt(run.restart.get('stop_s'), 2)}{killed} / {fmt(run.restart.get('start_s'), 2)}"

        rows.append(f"| {name} | server down: SIGTERM to exit / start to answering (s) | "
                    f"{both(lambda _, run: down(run))} | | |")
        rows.append(f"| {name} | per page, back after the first answer p50 / p99 (ms) | "
                    f"{both(lambda r, _: p50_99(r['back_after_up']))} | | |")
        rows.append(f"| {name} | per page, the attempt that worked p50 / p99 (ms) | "
                    f"{both(lambda r, _: p50_99(r['last_attempt']))} | | |")
        rows.append(f"| {name} | refresh over HTTP: 2xx / 429 / 5xx; p99 (ms) | - | "
                    + (f"{counts(b['refresh'])}; {fmt(b['refresh_latency']['p99_ms'], 1)}" if b else "-")
                    + f" | | 5xx 0: {verdict(b.get('refresh', {}).get('5xx', 0) == 0) if b else '-'} |")
        refused = (lambda r: sum(r["connect_errors"].values())) if b else None
        rows.append(f"| {name} | refused connects (codes) / pages not back | "
                    f"{both(lambda r, _: str(sum(r['connect_errors'].values())) + ' / ' + str(r['not_back']))} | | "
                    + (f"0: {verdict(refused(b) == 0 and b['not_back'] == 0)}" if b else "") + " |")
        if b:
            rows.append(f"| {name} | page GETs after reconnecting (rooms, grants): 2xx / 4xx / 5xx | - | "
                        f"{counts(b.get('page_gets'), ('2xx', '4xx', '5xx'))} | | |")
            left = b["sender"]["unacked_left"]
            clean = (b["lost_total"] == 0 and b["doubled_total"] == 0 and b["out_of_order_total"] == 0
                     and b["extra_total"] == 0 and left == 0)
            rows.append(f"| {name} | messages acked / lost / doubled / out of order | n/a (no storage) | "
                        f"{b['messages_stored']} / {b['lost_total']} / {b['doubled_total']} / {b['out_of_order_total']}"
                        + (f" (the sender gave up on {left} unacked)" if left else "")
                        + f" | | 0: {verdict(clean)} |")
        rows.append(f"| {name} | server CPU from the first answer to all back (s) | "
                    f"{both(lambda _, run: fmt(run.server_cpu_s, 2))} | {ratio(qr.server_cpu_s if qr else None, ref.server_cpu_s if ref else None)} | |")

    two = [(r, bench.runs.get(f"two-node-{r}", {})) for r in plan.two_node_receivers]
    two = [(r, runs) for r, runs in two if runs.get("one-node") and runs.get("two-nodes")]
    if two:
        rows += ["", "Two nodes (issue 9): fan-out on PostgreSQL + Redis, one node against two nodes sharing the "
                     "receivers and senders, all nodes on the server core.", "",
                 "| scenario | metric | one node | two nodes | ratio | target |", "|---|---|---:|---:|---:|---|"]
        for receivers, runs in two:
            one, pair2 = runs["one-node"], runs["two-nodes"]
            a, b = one.result, pair2.result
            name = f"two-node fan-out R={receivers}"
            rows.append(f"| {name} | deliveries/s | {fmt(a['deliveries_per_s'])} | {fmt(b['deliveries_per_s'])} | "
                        f"{ratio(b['deliveries_per_s'], a['deliveries_per_s'])} | |")
            cpu_a = one.server_cpu_s / a["deliveries"] * 1e6 if a["deliveries"] else None
            cpu_b = pair2.server_cpu_s / b["deliveries"] * 1e6 if b["deliveries"] else None
            ok = cpu_a is not None and cpu_b is not None and cpu_b <= 1.25 * cpu_a
            rows.append(f"| {name} | server CPU per delivery, all nodes (us) | {fmt(cpu_a, 1)} | {fmt(cpu_b, 1)} | "
                        f"{ratio(cpu_b, cpu_a)} | <= 1.25x: {verdict(ok)} |")
            for label, k in (("PostgreSQL backends", "postgres"), ("Redis (whole server)", "redis")):
                ba = one.backing_cpu_s.get(k, 0.0) / a["deliveries"] * 1e6 if a["deliveries"] else None
                bb = pair2.backing_cpu_s.get(k, 0.0) / b["deliveries"] * 1e6 if b["deliveries"] else None
                rows.append(f"| {name} | {label} CPU per delivery (us) | {fmt(ba, 2)} | {fmt(bb, 2)} | | |")
            rows.append(f"| {name} | latency p50 / p99 (ms) | {p50_99(a['latency'])} | {p50_99(b['latency'])} | | |")
            rows.append(f"| {name} | lost / out of order | {a['lost_total']} / {a['out_of_order_total']} | "
                        f"{b['lost_total']} / {b['out_of_order_total']} | | 0: "
                        f"{verdict(b['lost_total'] == 0 and b['out_of_order_total'] == 0 and a['lost_total'] == 0 and a['out_of_order_total'] == 0)} |")
            errs = {**a.get("ack_errors", {}), **{f"two: {k}": v for k, v in b.get("ack_errors", {}).items()}}
            if errs:
                rows.append(f"| {name} | refused messages (ack errors) | {sum(a.get('ack_errors', {}).values())} | "
                            f"{sum(b.get('ack_errors', {}).values())} | | 0: **not met** |")

    # Details: what shows who was the bottleneck.
    rows += ["", "Per run: server CPU (all nodes of the run, as a share of one core, over the measured window), "
                 "load generator CPU, busy share of each core (from /proc/stat, all processes and interrupts), CPU "
                 "used by other processes of the machine meanwhile (in cores; PostgreSQL backends of the bench "
                 "database and, in two-node runs, Redis are not counted there), connections dropped because an "
                 "accept queue was full (TcpExt ListenOverflows of the whole machine, over the generator's run; "
                 "both servers listen with a backlog of 2048), errors.", "",
             "| run | server | server CPU (of it in the kernel) | generator CPU | cores busy | other processes "
             "| listen queue overflows | errors |",
             "|---|---|---:|---:|---|---:|---:|---|"]
    for key, runs in bench.runs.items():
        for which, run in runs.items():
            r = run.result
            errors: dict[str, Any] = {}
            for k in ("ack_errors", "errors", "connect_errors", "join_errors", "failed", "reasons", "refresh_reasons"):
                if r.get(k):
                    errors[k] = r[k]
            if r.get("sender", {}).get("errors"):
                errors["sender"] = r["sender"]["errors"]
            busy = " / ".join(f"{v:.0%}" for _, v in sorted(run.core_busy.items()))
            kernel = run.server_sys_s / run.wall_s if run.wall_s else 0.0
            text = json.dumps(errors) if errors else "-"
            rows.append(f"| {key} | {which} | {run.server_cpu_share:.0%} ({kernel:.0%}) | "
                        f"{r.get('generator_cpu', 0):.0%} | "
                        f"{busy} | {run.other_cores:.2f} | {run.listen_overflows} | {text.replace('|', '/')} |")

    storm_qr = bench.runs.get("storm", {}).get("quart-rooms")
    ran = {key.split("-")[0] if not key.startswith("two-node") else "two" for key in bench.runs}
    rows += ["", "Notes:"]
    notes = [
        f"- Command: `python bench/run.py {' '.join(argv)}`".rstrip() + f"; {elapsed:.0f} s in all.",
        f"- Each server was started fresh for each row group, serving in one process (quart-rooms: `serve` with one "
        f"worker; the reference: Hypercorn's worker loop in its process), both on the "
        f"{bench.loop} event loop (`{' '.join(bench.loop_flag) or 'default'}` for quart-rooms); "
        f"warm-up {plan.warmup_s:g} s, then {plan.duration_s:g} s measured. Servers stop on SIGTERM.",
        "- quart-rooms ran with raised limits (env): "
        + ", ".join(f"`{k}={v}`" for k, v in QR_LIMITS.items())
        + (", and (--qr-env) " + ", ".join(f"`{k}={v}`" for k, v in bench.extra_env.items()) if bench.extra_env else "")
        + "; every other setting is its default (`max_pending_sign_ins` 64, `login_failures_per_account` 5, "
        "`sqlite_synchronous` FULL, the access log on). "
        f"Accounts from `quart-rooms create-user` and the admin API, {len(bench.users)} bench users; the generator "
        "signs in over HTTP for real tokens, and sockets of one user share its token.",
        f"- fan-out: {plan.senders} senders with at most {plan.window} messages in flight each (done when the "
        "message returns to its sender); deliveries count every `message` event at any socket of the room "
        "(receivers and senders); latency is send to arrival at each socket. "
        + ("permessage-deflate offered (--deflate)." if bench.deflate else "No permessage-deflate."),
        f"- connect: at most {plan.connect_concurrency} connects in flight, each a fresh websocket with the token "
        f"and a join of one of {-(-plan.connect_clients // plan.connect_per_room)} rooms ({plan.connect_per_room} "
        "users per room); RSS growth is worker RSS after the last join and "
        f"{plan.settle_s:g} s idle, minus RSS before the first connect, per connected socket. 'deflate offered' "
        "offers permessage-deflate like a browser (quart-rooms refuses it by default; the reference's Hypercorn "
        "accepts it).",
        f"- many rooms: every member keeps {plan.many_window} message in flight and sends the next on its ack; "
        "quart-rooms acks after the commit (group commit); the reference acks after its broadcast (no storage). "
        "Every quart-rooms row is compared to the same reference run: SQLite with `sqlite_synchronous` FULL (the "
        "default: an fsync per committed batch) and NORMAL (`QUART_ROOMS_SQLITE_SYNCHRONOUS=NORMAL`), and "
        "PostgreSQL, which runs unpinned on the same 2 cores, so it competes with both the server and the generator.",
        f"- sign-in burst: {plan.signin_users} distinct accounts (created beforehand) each POST /api/auth/login at "
        "the same moment from the generator (Node's fetch, HTTP/1.1, one connection each); a 429 is retried after "
        "its Retry-After unless that is over 5 s (an account locked by the failure throttle: that user gives up); "
        "sign-ins/s is the accounts signed in over the time until the last one was. The reference has no accounts, "
        "so quart-rooms is reported alone. argon2 runs in the server's thread pool (one thread per core the "
        "machine has, here both on the server core).",
        f"- reconnect storm: {plan.storm_clients} pages, {plan.storm_per_room} per room, each its own sign-in "
        "session (quart-rooms) with one websocket, plus a sender in every room posting "
        f"{plan.storm_send_rate:g} messages/s round robin, at most {plan.storm_send_window} in flight (client_id on "
        f"each, sent again after a failure until acked), {plan.storm_pre_s:g} s before the restart, through it, and "
        f"{plan.storm_post_s:g} s after every page is back; the sender retries every 100-200 ms with its still valid "
        "token, so it is back before the herd. The runner stops the server with SIGTERM, waits for it to exit and "
        "starts it again on the same port. Every page does what chat.js does: socket.io's reconnection (500 ms "
        "doubling to 5 s, +-50 % jitter, 10 s connect timeout); once the transport opens, a refresh over HTTP (no "
        "client timeout; the bench stops at 120 s), then the connect with the new access token, then a join with "
        "since_id and epoch (`more`: read the rest over HTTP; `reset`: start over; no ack in 10 s: join again 2 s "
        "later), and beside it GET /api/rooms and GET /api/rooms/{room}/grants; each HTTP request on a connection of "
        "its own. 'The attempt that worked' runs from the start of the reconnection attempt that succeeded to the "
        f"last join ack; pages not back within {plan.storm_back_deadline_s:g} s are counted. Every page that is back "
        "must hold every acked message id of its room exactly once, in order over the socket within each "
        "connection. The reference (no accounts, no storage) reconnects and joins again without a token or "
        "since_id; its messages are not checked. A refusal other than unauthorized/token_expired (e.g. "
        "`unavailable` while the server drains) leaves the real page offline; the bench connects again after 1 s.",
        "- two nodes: both `quart-rooms serve` processes (PostgreSQL + Redis, a Redis channel of the run's own) on "
        "the server core; socket k connects to node k mod 2, so receivers and senders are split evenly; the one-node "
        "row is the same configuration with one process. CPU per delivery adds up both nodes.",
        "- Absolute figures drift 20-40% between runs on this kind of machine; compare within one run.",
    ]
    # The general notes, then those of the scenarios that ran (by the first word of their note).
    topics = {"fan-out": "fanout", "connect": "connect", "many": "many", "sign-in": "signin",
              "reconnect": "storm", "two": "two"}
    for note in notes:
        topic = topics.get(note[2:].split(":")[0].split()[0])
        if topic is None or topic in ran:
            rows.append(note)
    if storm_qr and storm_qr.result.get("refused_unavailable"):
        rows.append(f"- storm: {storm_qr.result['refused_unavailable']} connects were refused `unavailable` (the "
                    "old server draining): the page stays offline after such a refusal.")
    noisy = [f"{key} {which} ({run.other_cores:.2f})" for key, runs in bench.runs.items()
             for which, run in runs.items() if run.other_cores > 0.1]
    if noisy:
        rows.append("- **Other processes used CPU during some runs** (cores): " + ", ".join(noisy)
                    + "; those figures are less trustworthy.")
    rows += [f"- {n}" for n in bench.notes]
    return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------- main

def redis_drop(url: str, prefix: str) -> int:
    """Delete the keys of this run (they all start with its channel name)."""
    import redis  # the project's own dependency

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="quart-rooms vs a bare python-socketio reference server.")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (a few minutes)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="event loop (Hypercorn worker class) of both servers (default: uvloop, "
                             "quart-rooms' own default)")
    parser.add_argument("--commit", help="run quart-rooms from this commit (a snapshot) instead of the working tree")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--receivers", help="fan-out receiver counts, comma-separated (default 10,100,500)")
    parser.add_argument("--two-node-receivers", help="two-node fan-out receiver counts (default 100,500)")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario")
    parser.add_argument("--storm-clients", type=int, help="reconnect storm: pages (default 2000; 300 with --quick)")
    parser.add_argument("--storm-send-rate", type=float,
                        help="reconnect storm: messages/s the sender posts (default 100; 30 with --quick)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows (and two_node)")
    parser.add_argument("--pg", default="postgresql+asyncpg://postgres@127.0.0.1:5432",
                        help="PostgreSQL server (a database is created and dropped there)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0",
                        help="Redis for two_node (keys under a prefix of this run's own, deleted afterwards)")
    parser.add_argument("--profile", metavar="DIR",
                        help="record py-spy profiles (collapsed stacks, .txt) of the quart-rooms worker into DIR; "
                             "summarise them with bench/profile_summary.py")
    parser.add_argument("--deflate", action="store_true",
                        help="offer permessage-deflate in the fan-out and many-rooms scenarios too (as browsers do)")
    parser.add_argument("--profile-reference", action="store_true", help="with --profile, profile the reference too")
    parser.add_argument("--quiet-wait", type=float, default=60.0, metavar="S",
                        help="before each run, wait up to S seconds for other processes to go quiet")
    parser.add_argument("--qr-env", action="append", default=[], metavar="KEY=VALUE",
                        help="one more quart-rooms setting for every quart-rooms run (e.g. "
                             "QUART_ROOMS_MAX_RECOVERY=5 to exercise `more` in the storm); named in the notes")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (server and generator logs, the SQLite file) instead of deleting it")
    parser.add_argument("--out", default=str(BENCH / "results" / "latest.md"), help="where to write the table")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    if args.receivers:
        plan.fanout_receivers = [int(x) for x in args.receivers.split(",")]
    if args.two_node_receivers:
        plan.two_node_receivers = [int(x) for x in args.two_node_receivers.split(",")]
    if args.duration:
        plan.duration_s = args.duration
    if args.storm_clients:
        plan.storm_clients = args.storm_clients
    if args.storm_send_rate:
        plan.storm_send_rate = args.storm_send_rate
    scenarios = set(args.only.split(","))
    if unknown := scenarios - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    extra_env = {}
    for item in args.qr_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("QUART_ROOMS_"):
            parser.error(f"--qr-env wants QUART_ROOMS_KEY=VALUE, not {item!r}")
        extra_env[key] = value
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
    if scenarios & {"signin", "storm"}:
        bench.signin_users = [f"signin{i:03d}" for i in range(plan.signin_users)]
    bench.quiet_wait_s = args.quiet_wait
    bench.profile_reference = args.profile_reference
    bench.deflate = args.deflate
    bench.extra_env = extra_env
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
             + [f"m{i:04d}" for i in range(plan.many_rooms)]
             + (storm_rooms(plan) if "storm" in scenarios else []))

    pg_url = None
    pg_version = ""
    want_pg = not args.no_postgres and bool(scenarios & {"many_rooms", "two_node"})
    if want_pg:
        try:
            pg_version = pg(args.pg, "version")
            bench.pg_db = f"quart_rooms_bench_{os.getpid()}"
            pg(args.pg, f'CREATE DATABASE "{bench.pg_db}"')
            pg_url = f"{args.pg}/{bench.pg_db}"
        except Exception as exc:  # no PostgreSQL here: report without those rows
            bench.notes.append(f"PostgreSQL rows skipped: {exc!r}")
            log(f"PostgreSQL not available ({exc!r}); skipping those rows")
    if "two_node" in scenarios and pg_url:
        bench.redis_url = args.redis
        bench.redis_prefix = f"quart-rooms-bench-{os.getpid()}"
        try:
            redis_drop(bench.redis_url, bench.redis_prefix)
        except Exception as exc:
            bench.notes.append(f"two-node rows skipped: Redis at {args.redis} did not answer ({exc!r})")
            log(f"Redis not available ({exc!r}); skipping two_node")
            bench.redis_url = ""
    elif "two_node" in scenarios:
        bench.notes.append("two-node rows skipped: they need PostgreSQL")
    try:
        log("seeding SQLite: admin via the CLI, users, rooms (and the storm's sessions) via HTTP")
        sessions = None
        if "storm" in scenarios:
            # One sign-in session per storm page (each page is its own browser), then the sender's.
            sessions = [bench.signin_users[k % len(bench.signin_users)] for k in range(plan.storm_clients)]
            sessions.append(bench.users[0])
        bench.seed(sqlite_url, rooms, bench.users + bench.signin_users, sessions)
        if pg_url:
            log("seeding PostgreSQL")
            bench.seed(pg_url, ["fanout"] + [r for r in rooms if r.startswith("m")], bench.users)
        steps = [("fanout", lambda: bench.fanout(sqlite_url)), ("connect", lambda: bench.connect(sqlite_url)),
                 ("many_rooms", lambda: bench.many_rooms(sqlite_url, pg_url)),
                 ("signin", lambda: bench.signin(sqlite_url)), ("storm", lambda: bench.storm(sqlite_url))]
        if pg_url and bench.redis_url:
            steps.append(("two_node", lambda: bench.two_node(pg_url or "")))
        for name, step in steps:
            if name not in scenarios:
                continue
            try:
                step()
            except Exception as exc:  # the servers are stopped; go on with the next scenario
                log(f"scenario {name} failed: {exc}")
                bench.notes.append(f"**Scenario {name} failed**: {str(exc).splitlines()[0][:300]}")
    finally:
        if bench.pg_db:
            try:
                pg(args.pg, f'DROP DATABASE IF EXISTS "{bench.pg_db}" WITH (FORCE)')
            except Exception as exc:
                log(f"could not drop database {bench.pg_db}: {exc!r}")
        if bench.redis_url:
            try:
                dropped = redis_drop(bench.redis_url, bench.redis_prefix)
                log(f"deleted {dropped} Redis keys under {bench.redis_prefix}")
            except Exception as exc:
                log(f"could not delete the Redis keys under {bench.redis_prefix}: {exc!r}")
    if bench.seed_problems:
        bench.notes.append("While seeding (8 concurrent admin user creations, 4 concurrent sign-ins), the server "
                           "answered: " + ", ".join(f"{k} x{v}" for k, v in sorted(bench.seed_problems.items()))
                           + " (retried).")
    elapsed = time.monotonic() - started
    text = report(bench, machine_facts(pg_version, args.commit, workdir, bench.redis_url), elapsed, argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps(
        {key: {which: {"result": r.result, "server_cpu_s": r.server_cpu_s, "wall_s": r.wall_s, "nodes": r.nodes,
                       "core_busy": r.core_busy, "other_cores": r.other_cores, "server_sys_s": r.server_sys_s,
                       "rss_ready_kib": r.rss_ready_kib, "rss_idle_kib": r.rss_idle_kib,
                       "backing_cpu_s": r.backing_cpu_s, "restart": r.restart,
                       "listen_overflows": r.listen_overflows}
               for which, r in runs.items()} for key, runs in bench.runs.items()}, indent=1))
    print(text)
    log(f"table written to {out}")
    if args.keep:
        log(f"work folder kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
