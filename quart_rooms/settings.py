"""Typed settings: the packaged defaults, then QUART_ROOMS_CONFIG, then QUART_ROOMS_* env."""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from quart_rooms.proxy import parse_networks

ENV_PREFIX = "QUART_ROOMS_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
PLACEHOLDER_SECRETS = {"secret", "changeme", "change-me", "your-secret", "jwt-secret", "replace-me"}
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA")


class SettingsError(ValueError):
    """A setting is unknown or has a bad value; the message names it."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of the server; documented in config/default.toml."""

    instance_path: str
    database_url: str
    auto_migrate: bool
    redis_url: str
    redis_channel: str
    jwt_secret: str
    jwt_algorithm: str
    jwt_private_key_file: str
    jwt_public_key_file: str
    jwt_issuer: str
    jwt_audience: str
    access_token_ttl: int
    refresh_token_ttl: int
    allowed_origins: list[str] = field(default_factory=list)
    allow_any_origin: bool
    trusted_proxies: list[str] = field(default_factory=list)
    metrics_allow: list[str] = field(default_factory=list)
    max_message_chars: int
    max_recovery: int
    messages_per_10s: int
    joins_per_10s: int
    max_sockets_per_user: int
    max_body_bytes: int
    max_socket_packet_bytes: int
    websocket_compression: bool
    login_failures_per_account: int
    login_failures_per_address: int
    login_failure_window: int
    max_pending_sign_ins: int
    max_pending_refreshes: int
    sqlite_synchronous: str
    shutdown_timeout: int
    host: str
    port: int
    read_timeout: int
    body_timeout: int
    event_loop: str
    log_level: str
    log_format: str
    access_log: bool

    @property
    def instance_dir(self) -> Path:
        """The instance folder, created on first use."""
        path = Path(self.instance_path).expanduser().resolve()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)  # the database and the secret: owner only
        return path

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the instance folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.instance_dir / 'quart-rooms.db'}"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated like any other source)."""
        merged = dataclasses.asdict(self) | changes
        return _build(merged, source="override")


def _fields() -> dict[str, type]:
    hints = {f.name: f.type for f in dataclasses.fields(Settings)}
    types = {"str": str, "int": int, "bool": bool, "list[str]": list}
    return {name: types[str(hint)] for name, hint in hints.items()}


def _coerce(key: str, value: Any, kind: type, source: str) -> Any:
    if isinstance(value, str) and source == "env":
        value = _parse_env(key, value, kind)
    if kind is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, kind):
        return value
    wanted = {str: "a string", int: "an integer", bool: "true or false", list: "a list of strings"}[kind]
    raise SettingsError(f"setting {key!r} from {source} must be {wanted}, got {value!r}")


def _parse_env(key: str, raw: str, kind: type) -> Any:
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            return raw
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        return raw
    if kind is list:
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{source} is not valid TOML: {exc}") from exc


def check_origin(origin: str) -> str | None:
    """What is wrong with an allowed_origins entry, or None for a valid origin.

    A browser's Origin header is `scheme://host[:port]` with no path, not
    even a trailing slash (RFC 6454 section 6.1), so anything else could
    never match and would refuse every browser.
    """
    if origin == "*":
        return None
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must start with http:// or https:// and name a host"
    if parts.path or parts.query or parts.fragment or parts.username or parts.password or origin.endswith("/"):
        return "must be only scheme://host[:port], with no path, not even a trailing slash"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    if origin != origin.lower():
        return "must be in lower case, as browsers send it"
    return None


def check_jwt_secret(secret: str, algorithm: str) -> str | None:
    """What is wrong with a configured HS secret, or None.

    RFC 7518 section 3.2: an HMAC key must be at least as long as the hash
    output (32 bytes for HS256, 48 for HS384, 64 for HS512). Placeholders
    from examples are refused too.
    """
    need = {"HS256": 32, "HS384": 48, "HS512": 64}[algorithm]
    if secret.lower() in PLACEHOLDER_SECRETS or secret.lower().startswith(("replace-with", "change-me", "changeme")):
        return "is a placeholder from an example; generate one (see config/default.toml)"
    if len(secret.encode()) < need:
        return f"must be at least {need} bytes for {algorithm} (RFC 7518 section 3.2)"
    if len(set(secret)) < 8:
        return "is too repetitive to be a secret"
    return None


def _check(values: Mapping[str, Any]) -> None:
    if values["jwt_algorithm"] not in JWT_ALGORITHMS:
        raise SettingsError(f"setting 'jwt_algorithm' must be one of {', '.join(JWT_ALGORITHMS)}")
    if values["jwt_secret"] and values["jwt_algorithm"].startswith("HS"):
        problem = check_jwt_secret(values["jwt_secret"], values["jwt_algorithm"])
        if problem:
            raise SettingsError(f"setting 'jwt_secret' {problem}")
    for key in ("trusted_proxies", "metrics_allow"):
        try:
            parse_networks(values[key])
        except ValueError as exc:
            raise SettingsError(f"setting {key!r}: {exc}") from None
    for origin in values["allowed_origins"]:
        problem = check_origin(origin)
        if problem:
            raise SettingsError(f"setting 'allowed_origins': {origin!r} {problem}")
    if not values["jwt_algorithm"].startswith("HS"):
        for key in ("jwt_private_key_file", "jwt_public_key_file"):
            if not values[key]:
                raise SettingsError(f"setting {key!r} is needed for jwt_algorithm {values['jwt_algorithm']}")
    positive = (
        "access_token_ttl", "refresh_token_ttl", "max_message_chars", "messages_per_10s",
        "max_sockets_per_user", "max_body_bytes", "max_socket_packet_bytes",
        "login_failures_per_account", "login_failures_per_address", "login_failure_window",
        "max_recovery", "max_pending_sign_ins", "max_pending_refreshes", "shutdown_timeout", "joins_per_10s",
        "read_timeout", "body_timeout",
    )
    for key in positive:
        if values[key] <= 0:
            raise SettingsError(f"setting {key!r} must be greater than 0, got {values[key]}")
    if values["log_format"] not in ("text", "json"):
        raise SettingsError(f"setting 'log_format' must be text or json, got {values['log_format']!r}")
    if values["sqlite_synchronous"] not in ("FULL", "NORMAL"):
        raise SettingsError(f"setting 'sqlite_synchronous' must be FULL or NORMAL, got {values['sqlite_synchronous']!r}")
    if values["event_loop"] not in ("uvloop", "asyncio"):
        raise SettingsError(f"setting 'event_loop' must be uvloop or asyncio, got {values['event_loop']!r}")
    if not 0 < values["port"] < 65536:
        raise SettingsError(f"setting 'port' must be between 1 and 65535, got {values['port']}")
    if "*" in values["allowed_origins"] and not values["allow_any_origin"]:
        raise SettingsError(
            "setting 'allowed_origins' contains '*': set allow_any_origin = true if that is intended"
        )
    # A client that escapes non-ASCII in JSON spends up to 12 bytes on one character (an emoji).
    if values["max_socket_packet_bytes"] < values["max_message_chars"] * 12 + 1024:
        raise SettingsError(
            "setting 'max_socket_packet_bytes' must be at least max_message_chars * 12 + 1024, "
            "so that an over-long message gets an error ack instead of a dropped connection"
        )


def _build(values: Mapping[str, Any], *, source: str) -> Settings:
    kinds = _fields()
    clean = {key: _coerce(key, value, kinds[key], source) for key, value in values.items()}
    _check(clean)
    return Settings(**clean)


def _merge(target: dict[str, Any], layer: Mapping[str, Any], source: str) -> None:
    kinds = _fields()
    for key, value in layer.items():
        if key not in kinds:
            raise SettingsError(f"unknown setting {key!r} in {source}")
        target[key] = _coerce(key, value, kinds[key], source if source == "env" else "file")


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the defaults, the QUART_ROOMS_CONFIG file, the environment, then overrides."""
    env = os.environ if environ is None else environ
    default_text = resources.files("quart_rooms").joinpath("default.toml").read_text()
    values: dict[str, Any] = {}
    _merge(values, _read_toml(default_text, "config/default.toml"), "config/default.toml")
    config_path = env.get(CONFIG_ENV)
    if config_path:
        try:
            text = Path(config_path).read_text()
        except OSError as exc:
            raise SettingsError(f"{CONFIG_ENV}={config_path}: cannot read it ({exc.strerror})") from exc
        _merge(values, _read_toml(text, config_path), config_path)
    env_layer = {
        key[len(ENV_PREFIX):].lower(): raw
        for key, raw in env.items()
        # QUART_ROOMS_TEST_* tell the test suite where its services are; they are no settings.
        if key.startswith(ENV_PREFIX) and key != CONFIG_ENV and not key.startswith(ENV_PREFIX + "TEST_")
    }
    unknown = sorted(set(env_layer) - set(_fields()))
    if unknown:
        raise SettingsError(f"unknown setting {ENV_PREFIX + unknown[0].upper()} in the environment")
    _merge(values, env_layer, "env")
    _merge(values, overrides, "override")
    return _build(values, source="settings")


def jwt_secret(settings: Settings) -> str:
    """The configured HS secret, or one generated once and kept in the instance folder."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = settings.instance_dir / "jwt_secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(48)
    # Written whole to a private temporary file, then linked into place: a
    # worker starting at the same moment reads either nothing or all of it.
    temporary = path.with_name(f".jwt_secret.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    try:
        os.link(temporary, path)
    except FileExistsError:  # another worker made it first
        return path.read_text().strip()
    finally:
        temporary.unlink()
    return secret
