"""The deployment kit in deploy/, checked as far as this machine allows.

No Docker engine runs here, so the image is not built and compose does not
run; their files are checked for the structure a self-hoster relies on. nginx
does run: a copy of deploy/nginx with a throw-away certificate, only the
environment-specific lines rewritten (upstream host names, listen ports,
certificate, pid, log and temp paths), is tested with `nginx -t` and then
served for real in front of two real `quart-rooms serve` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
DEFAULTS = tomllib.loads((REPO / "config" / "default.toml").read_text())
# The server's drain time on SIGTERM (the shutdown_timeout setting, 10 s unless configured).
SHUTDOWN_TIMEOUT = int(DEFAULTS.get("shutdown_timeout", 10))


def _nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


NGINX = _nginx()
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx)")


# --- nginx -----------------------------------------------------------------


def make_certificate(folder: Path) -> None:
    """A self-signed certificate for 127.0.0.1 and localhost, as fullchain.pem and privkey.pem."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "privkey.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _rewrite(text: str, replacements: list[tuple[str, str]], name: str) -> str:
    """Apply exact replacements; each original must occur exactly once, so a changed deploy file fails here."""
    for old, new in replacements:
        assert text.count(old) == 1, f"{name}: expected {old!r} exactly once"
        text = text.replace(old, new)
    return text


@dataclass
class NginxCopy:
    """A self-contained copy of deploy/nginx under a temporary folder."""

    prefix: Path
    conf: Path
    access_log: Path
    error_log: Path


def nginx_copy(tmp: Path, upstreams: tuple[int, int], http_port: int, https_port: int) -> NginxCopy:
    """Copy deploy/nginx into tmp with what only makes sense in the container pointed into tmp."""
    prefix = tmp / "nginx"
    shutil.copytree(DEPLOY / "nginx", prefix)
    make_certificate(prefix / "certs")
    (prefix / "acme-challenge").mkdir()
    (prefix / "temp").mkdir()
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / 'temp' / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = prefix / "nginx.conf"
    text = _rewrite(main.read_text(), [
        ("pid /run/nginx.pid;", f"pid {prefix / 'nginx.pid'};"),
        ("error_log /var/log/nginx/error.log warn;", f"error_log {prefix / 'error.log'} warn;"),
        ("access_log /var/log/nginx/access.log quart_rooms;", f"access_log {prefix / 'access.log'} quart_rooms;"),
        ("\nhttp {\n", "\nhttp {\n" + temp_paths),
    ], "nginx.conf")
    if os.geteuid() == 0:
        # Workers would otherwise run as nobody, who cannot enter pytest's private temporary folders.
        text = "user root;\n" + text
    main.write_text(text)
    site = prefix / "quart-rooms.conf"
    site.write_text(_rewrite(site.read_text(), [
        ("server node1:5000 ", f"server 127.0.0.1:{upstreams[0]} "),
        ("server node2:5000 ", f"server 127.0.0.1:{upstreams[1]} "),
        ("listen 80 default_server;", f"listen 127.0.0.1:{http_port} default_server;"),
        ("listen 443 ssl default_server;", f"listen 127.0.0.1:{https_port} ssl default_server;"),
        ("/etc/nginx/certs/fullchain.pem;", f"{prefix / 'certs' / 'fullchain.pem'};"),
        ("/etc/nginx/certs/privkey.pem;", f"{prefix / 'certs' / 'privkey.pem'};"),
        ("root /var/www/acme-challenge;", f"root {prefix / 'acme-challenge'};"),
    ], "quart-rooms.conf"))
    return NginxCopy(prefix, main, prefix / "access.log", prefix / "error.log")


@needs_nginx
def test_nginx_config_is_valid(tmp_path: Path) -> None:
    """`nginx -t` accepts the configuration, with no warning."""
    assert NGINX is not None
    copy = nginx_copy(tmp_path, (free_port(), free_port()), free_port(), free_port())
    done = subprocess.run([NGINX, "-t", "-c", str(copy.conf), "-p", f"{copy.prefix}/"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
    assert "[warn]" not in done.stderr and "[emerg]" not in done.stderr, done.stderr


def _directives(text: str) -> list[str]:
    """The configuration's lines without comments, stripped."""
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def test_nginx_config_matches_the_server() -> None:
    """Body limit = the server's limits, upstream port = its port, the WebSocket headers, sticky hashing."""
    lines = _directives((DEPLOY / "nginx" / "quart-rooms.conf").read_text())
    [size] = [line for line in lines if line.startswith("client_max_body_size ")]
    value = size.split()[1].rstrip(";")
    limit = int(value[:-1]) * 1024 if value.endswith("k") else int(value)
    assert limit == DEFAULTS["max_body_bytes"] == DEFAULTS["max_socket_packet_bytes"]
    servers = [line for line in lines if line.startswith("server node")]
    assert [s.split()[1] for s in servers] == [f"node1:{DEFAULTS['port']}", f"node2:{DEFAULTS['port']}"]
    assert "hash $remote_addr consistent;" in lines
    assert "proxy_set_header Upgrade $http_upgrade;" in lines
    assert "proxy_set_header Connection $quart_rooms_connection_upgrade;" in lines
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in lines
    # No response cache anywhere: every proxy_cache says off, and no cache zone exists.
    assert not any(line.startswith("proxy_cache_path") for line in lines)
    assert {line for line in lines if line.startswith("proxy_cache ")} == {"proxy_cache off;"}


# --- nginx for real, in front of two real servers ---------------------------


@dataclass
class Stack:
    """nginx on loopback ports in front of two `quart-rooms serve` processes."""

    https: str
    http: str
    nodes: dict[int, subprocess.Popen[bytes]]
    access_log: Path
    acme_webroot: Path
    password: str

    def upstreams_of(self, path: str) -> list[str]:
        """The upstream field of each logged request for this path (oldest first)."""
        found = []
        for line in self.access_log.read_text().splitlines():
            if f" {path}" in line:
                match = re.search(r"upstream=(\S+(?:, \S+)*) upstream_status=", line)
                if match:
                    found.append(match.group(1))
        return found


def _wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None, **kwargs: Any) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1, **kwargs).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s")


def _start(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """A process in a session (and process group) of its own: `serve` runs Hypercorn's worker as a child."""
    return subprocess.Popen(command, start_new_session=True, **kwargs)


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal the process's group, give it time to stop, then kill whatever of the group is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=SHUTDOWN_TIMEOUT + 5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    tmp = tmp_path_factory.mktemp("deploy")
    ports = (free_port(), free_port())
    password = "deploy-test-password"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUART_ROOMS_")}
    env["QUART_ROOMS_JWT_SECRET"] = secrets.token_urlsafe(32)  # shared, as in compose.yaml
    if "trusted_proxies" in DEFAULTS:
        env["QUART_ROOMS_TRUSTED_PROXIES"] = "127.0.0.1"  # nginx, as in compose.yaml
    cli = [sys.executable, "-m", "quart_rooms.cli"]
    folders = [tmp / f"node{i}" for i in (1, 2)]
    for folder in folders:
        folder.mkdir()
    # Each node has its own SQLite instance (two nodes sharing rooms need PostgreSQL and
    # Redis); the same admin exists on both, so either can answer a sign-in.
    creators = [subprocess.Popen(cli + ["create-user", "admin", "--admin"], cwd=folder, env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for folder in folders]
    for creator in creators:
        output, _ = creator.communicate(f"{password}\n".encode(), timeout=60)
        assert creator.returncode == 0, output.decode()
    nodes: dict[int, subprocess.Popen[bytes]] = {}
    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for folder, port in zip(folders, ports):
            logs.append(log := (folder / "serve.log").open("wb"))
            nodes[port] = _start(cli + ["serve", "--port", str(port)], cwd=folder, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
            processes.append(nodes[port])
        for port, process in nodes.items():
            _wait_http(f"http://127.0.0.1:{port}/readyz", 30, process)
        http_port, https_port = free_port(), free_port()
        copy = nginx_copy(tmp, ports, http_port, https_port)
        assert NGINX is not None
        nginx = _start([NGINX, "-c", str(copy.conf), "-p", f"{copy.prefix}/", "-g", "daemon off;"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(nginx)
        https = f"https://127.0.0.1:{https_port}"
        try:
            _wait_http(https + "/healthz", 10, nginx, verify=False)
        except AssertionError:
            raise AssertionError(copy.error_log.read_text() if copy.error_log.exists() else "nginx did not start") from None
        yield Stack(https, f"http://127.0.0.1:{http_port}", nodes, copy.access_log,
                    copy.prefix / "acme-challenge", password)
    finally:
        for process in reversed(processes):
            _stop(process)
        for log in logs:
            log.close()


def test_https_proxies_to_the_server(stack: Stack) -> None:
    """/healthz through TLS, HSTS, HTTP redirects to HTTPS but answers ACME challenges and nginx's own
    health check, /metrics stays inside, the API is never cached."""
    with httpx.Client(verify=False, timeout=5) as client:
        health = client.get(stack.https + "/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert health.headers["strict-transport-security"] == "max-age=31536000"
        assert client.get(stack.https + "/readyz").json()["status"] == "ok"

        redirect = client.get(stack.http + "/api/rooms?x=1")
        assert redirect.status_code == 301
        assert redirect.headers["location"] == "https://127.0.0.1/api/rooms?x=1"
        challenge = stack.acme_webroot / ".well-known" / "acme-challenge" / "t0ken"
        challenge.parent.mkdir(parents=True, exist_ok=True)
        challenge.write_text("t0ken.thumbprint")  # where certbot --webroot -w <webroot> writes it
        assert client.get(stack.http + "/.well-known/acme-challenge/t0ken").text == "t0ken.thumbprint"
        own = client.get(stack.http + "/nginx-healthz")
        assert (own.status_code, own.text) == (200, "ok\n")

        assert client.get(stack.https + "/metrics").status_code == 403

        me = client.get(stack.https + "/api/me")
        assert me.status_code == 401 and me.json()["error"]["code"] == "unauthorized"  # the app answered
        assert me.headers["cache-control"] == "no-store"
        assert me.headers["strict-transport-security"] == "max-age=31536000"


def test_body_limit_answers_in_the_api_shape(stack: Stack) -> None:
    """A body over the server's 64 KiB limit gets 413 payload_too_large as JSON from nginx itself."""
    limit = DEFAULTS["max_body_bytes"]
    with httpx.Client(verify=False, timeout=5) as client:
        big = client.post(stack.https + "/api/auth/login", content=b"x" * (limit + 1),
                          headers={"Content-Type": "application/json"})
        assert big.status_code == 413
        assert big.json() == {"error": {"code": "payload_too_large", "message": "The request body is too large."}}
        at_limit = client.post(stack.https + "/api/auth/login", content=b" " * limit,
                               headers={"Content-Type": "application/json"})
        assert at_limit.status_code == 400  # reached the app, which found no JSON in it


async def _refusal(url: str, **kwargs: Any) -> Any:
    """Connect without a token; the connect_error data, or None if the connection failed without one."""
    sio = socketio.AsyncClient(reconnection=False, ssl_verify=False)
    errors: list[Any] = []
    sio.on("connect_error", errors.append)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await sio.connect(url, wait_timeout=5, **kwargs)
    finally:
        http = getattr(sio.eio, "http", None)
        if http is not None and not http.closed:
            await http.close()
    return errors[-1] if errors else None


async def test_websocket_upgrade_reaches_the_app(stack: Stack) -> None:
    """Through nginx, a tokenless websocket is refused by the app; the Origin check sees Host and https."""
    https_port = stack.https.rsplit(":", 1)[1]
    refused = await _refusal(stack.https, transports=["websocket"],
                             headers={"Origin": f"https://127.0.0.1:{https_port}"})
    assert refused is not None and refused["data"]["code"] == "unauthorized"
    # A foreign origin is turned away (400) before the app looks at tokens at all.
    foreign = await _refusal(stack.https, transports=["websocket"], headers={"Origin": "https://elsewhere.example"})
    assert not isinstance(foreign, dict), foreign
    statuses = [line.split('" ', 1)[1].split()[0] for line in stack.access_log.read_text().splitlines()
                if "transport=websocket" in line]
    assert statuses[-2] == "101" and statuses[-1].startswith("4"), statuses


async def _close(sio: socketio.AsyncClient) -> None:
    """Disconnect at once: a polling client would otherwise wait for its pending poll, which the
    server answers only at its ping timeout (directly as through nginx)."""
    if sio.connected:
        for namespace in sio.namespaces:
            await sio._send_packet(sio.packet_class(socketio.packet.DISCONNECT, namespace=namespace))
        await sio.eio.disconnect(abort=True)
    reader = getattr(sio.eio, "read_loop_task", None)
    if reader is not None and not reader.done():
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    http = getattr(sio.eio, "http", None)
    if http is not None and not http.closed:
        await http.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_chat_through_the_proxy(stack: Stack, transport: str) -> None:
    """Sign in, join and post through nginx; long-polling works because every request sticks to one node."""
    with httpx.Client(base_url=stack.https, verify=False, timeout=10) as client:
        login = client.post("/api/auth/login", json={"username": "admin", "password": stack.password})
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        room = f"deploy-{transport}"
        made = client.post("/api/admin/rooms", json={"name": room, "public": True},
                           headers={"Authorization": f"Bearer {token}"})
        assert made.status_code == 201, made.text
    sio = socketio.AsyncClient(reconnection=False, ssl_verify=False)
    delivered: asyncio.Queue[Any] = asyncio.Queue()
    sio.on("message", delivered.put_nowait)
    try:
        await sio.connect(stack.https, auth={"token": token}, transports=[transport], wait_timeout=5)
        joined = await sio.call("join", {"room": room}, timeout=5)
        assert joined["ok"], joined
        sent = await sio.call("message", {"room": room, "msg": f"hello over {transport}"}, timeout=5)
        assert sent["ok"], sent
        message = await asyncio.wait_for(delivered.get(), 5)
        assert (message["id"], message["msg"]) == (sent["id"], f"hello over {transport}")
    finally:
        await _close(sio)
    socket_io = stack.upstreams_of("/socket.io/")
    assert socket_io and len(set(socket_io)) == 1, socket_io  # one node served them all


def test_failover_to_the_other_node(stack: Stack) -> None:
    """When the node a client sticks to dies, nginx sends the client to the other one."""
    with httpx.Client(verify=False, timeout=10) as client:
        assert client.get(stack.https + "/healthz").status_code == 200
        [sticky] = set(stack.upstreams_of("/healthz"))
        port = int(sticky.rsplit(":", 1)[1])
        _stop(stack.nodes[port], signal.SIGKILL)
        assert client.get(stack.https + "/healthz").status_code == 200
        login = client.post(stack.https + "/api/auth/login", json={"username": "admin", "password": stack.password})
        assert login.status_code == 200, login.text
    [other] = set(stack.nodes) - {port}
    assert stack.upstreams_of("/healthz")[-1].endswith(f":{other}")


# --- compose ------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read deploy/compose.yaml (a test extra)")
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def _port_of(url: str) -> int:
    match = re.search(r":(\d+)/", url)
    assert match, url
    return int(match.group(1))


def test_compose_structure() -> None:
    """The services, their secrets, health checks, restart policies and start order."""
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "node1", "node2", "nginx"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    for name in ("postgres", "redis", "node1", "node2", "nginx"):
        service = services[name]
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
    for name in ("node1", "node2", "migrate"):
        env = services[name]["environment"]
        assert env["QUART_ROOMS_DATABASE_URL"].startswith("postgresql+asyncpg://"), name
        assert "@postgres:5432/" in env["QUART_ROOMS_DATABASE_URL"], name
        assert env["QUART_ROOMS_REDIS_URL"].startswith("redis://redis:6379/"), name
        assert env["QUART_ROOMS_JWT_SECRET"].startswith("${QUART_ROOMS_JWT_SECRET:?"), name
        assert services[name]["image"] == services["migrate"]["image"], name
    assert services["migrate"]["command"] == ["quart-rooms", "migrate"]
    assert services["migrate"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert services["migrate"]["restart"] == "no"
    for name in ("node1", "node2"):
        node = services[name]
        assert node["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
        assert "/readyz" in " ".join(node["healthcheck"]["test"])
        assert f":{DEFAULTS['port']}/" in " ".join(node["healthcheck"]["test"])
        grace = node["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) > SHUTDOWN_TIMEOUT
    nginx = services["nginx"]
    assert "443:443" in nginx["ports"] and "80:80" in nginx["ports"]
    assert nginx["depends_on"] == {n: {"condition": "service_healthy"} for n in ("node1", "node2")}
    mounts = {volume.split(":")[1] for volume in nginx["volumes"]}
    assert {"/etc/nginx/nginx.conf", "/etc/nginx/quart-rooms.conf", "/etc/nginx/certs"} <= mounts
    for volume in nginx["volumes"]:
        source = volume.split(":")[0]
        if source.endswith(".conf"):
            assert (DEPLOY / source).is_file(), volume


def test_compose_addresses_agree() -> None:
    """Fixed addresses inside the fixed subnet; the nodes trust exactly nginx's address."""
    compose = _compose()
    services = compose["services"]
    [pool] = compose["networks"]["quart-rooms"]["ipam"]["config"]
    subnet = ipaddress.ip_network(pool["subnet"])
    assert subnet.is_private
    address = {name: ipaddress.ip_address(services[name]["networks"]["quart-rooms"]["ipv4_address"])
               for name in ("nginx", "node1", "node2")}
    assert all(a in subnet for a in address.values()) and len(set(address.values())) == 3
    for name in ("node1", "node2"):
        trusted = services[name]["environment"]["QUART_ROOMS_TRUSTED_PROXIES"].split(",")
        assert [ipaddress.ip_address(t.strip()) for t in trusted] == [address["nginx"]]


def test_compose_secrets_come_from_the_env_file() -> None:
    """Every ${VAR:?...} compose.yaml requires is listed in env.example, and no secret is written in it."""
    text = (DEPLOY / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", text))
    example = (DEPLOY / "env.example").read_text()
    listed = {line.split("=", 1)[0] for line in example.splitlines() if re.match(r"^[A-Z_][A-Z0-9_]*=", line)}
    assert required == listed == {"POSTGRES_PASSWORD", "QUART_ROOMS_JWT_SECRET"}
    assert all(line.endswith("=") for line in example.splitlines() if re.match(r"^[A-Z_]+=", line))
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


# Settings the deploy files use that the server work of the same issue adds; once
# config/default.toml has them, they need no mention here.
PENDING_SETTINGS = {"trusted_proxies", "log_format"}


def test_deploy_files_name_real_settings() -> None:
    """Every QUART_ROOMS_* variable the deploy files set is a setting of config/default.toml."""
    known = set(DEFAULTS) | PENDING_SETTINGS
    for path in (DEPLOY / "compose.yaml", DEPLOY / "Dockerfile", DEPLOY / "systemd" / "env.example"):
        for name in re.findall(r"\bQUART_ROOMS_([A-Z_]+)=", path.read_text()) + re.findall(
                r"^\s*QUART_ROOMS_([A-Z_]+):", path.read_text(), re.MULTILINE):
            assert name.lower() in known, f"{path.name}: QUART_ROOMS_{name} is not a setting"


# --- Dockerfile ---------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")
    ))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def test_dockerfile() -> None:
    """Multi-stage on slim Python 3.11, hash-checked install, non-root, volume, port, health check, command."""
    instructions = _instructions()
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) >= 2
    args = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    final = instructions[max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"):]
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert "--require-hashes -r /tmp/requirements.lock" in runs
    assert re.search(r"pip\"? install --no-deps /tmp/wheels/\S+\.whl", runs)
    [user] = [rest for keyword, rest in final if keyword == "USER"]
    assert user.split(":")[0] not in {"root", "0"}
    assert ("EXPOSE", str(DEFAULTS["port"])) in final
    [volume] = [rest for keyword, rest in final if keyword == "VOLUME"]
    instance = volume.strip('[]"')
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert f"QUART_ROOMS_INSTANCE_PATH={instance}" in env
    [health] = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    assert "urllib.request" in health and "/healthz" in health
    assert ("CMD", '["quart-rooms", "serve", "--host", "0.0.0.0"]') in final
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "!requirements.lock" in ignore and "!quart_rooms" in ignore


# --- systemd ------------------------------------------------------------------


def _unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "quart-rooms.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def test_systemd_unit() -> None:
    """The unit runs the venv's serve as quart-rooms, restarts on failure, outlasts the drain, is sandboxed."""
    service = _unit()["Service"]
    expected = {
        "User": "quart-rooms", "EnvironmentFile": "/etc/quart-rooms/env", "WorkingDirectory": "/var/lib/quart-rooms",
        "ExecStart": "/opt/quart-rooms/.venv/bin/quart-rooms serve", "Restart": "on-failure", "RestartSec": "2",
        "KillSignal": "SIGTERM", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/quart-rooms", "PrivateTmp": "yes",
    }
    for key, value in expected.items():
        assert service[key] == [value], key
    assert int(service["TimeoutStopSec"][0]) > SHUTDOWN_TIMEOUT


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing to say (ExecStart pointed at this environment's quart-rooms)."""
    script = Path(sys.executable).with_name("quart-rooms")
    assert script.exists(), "install the project (pip install -e .) so its quart-rooms script exists"
    unit = tmp_path / "quart-rooms.service"
    unit.write_text(_rewrite((DEPLOY / "systemd" / "quart-rooms.service").read_text(),
                             [("ExecStart=/opt/quart-rooms/.venv/bin/quart-rooms ", f"ExecStart={script} ")],
                             "quart-rooms.service"))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr
