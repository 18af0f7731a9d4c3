"""Settings: defaults, the config file, the environment, and clear errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from quart_rooms.settings import SettingsError, jwt_secret, load_settings


def test_defaults() -> None:
    """The packaged defaults load and match the contract's keys."""
    settings = load_settings(environ={})
    assert settings.port == 5000 and settings.host == "127.0.0.1"
    assert settings.jwt_algorithm == "HS256" and settings.jwt_secret == ""
    assert settings.access_token_ttl == 300
    assert settings.allowed_origins == []


def test_file_then_environment(tmp_path: Path) -> None:
    """The QUART_ROOMS_CONFIG file overrides defaults; the environment overrides the file."""
    config = tmp_path / "c.toml"
    config.write_text('port = 7000\nmax_message_chars = 500\nallowed_origins = ["https://a.example"]\n')
    settings = load_settings(environ={
        "QUART_ROOMS_CONFIG": str(config),
        "QUART_ROOMS_MAX_MESSAGE_CHARS": "800",
        "QUART_ROOMS_AUTO_MIGRATE": "false",
        "QUART_ROOMS_ALLOWED_ORIGINS": "https://b.example, https://c.example",
    })
    assert settings.port == 7000
    assert settings.max_message_chars == 800
    assert settings.auto_migrate is False
    assert settings.allowed_origins == ["https://b.example", "https://c.example"]


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"QUART_ROOMS_PORTT": "1"}, "QUART_ROOMS_PORTT"),
        ({"QUART_ROOMS_PORT": "many"}, "'port'"),
        ({"QUART_ROOMS_PORT": "70000"}, "'port'"),
        ({"QUART_ROOMS_AUTO_MIGRATE": "maybe"}, "'auto_migrate'"),
        ({"QUART_ROOMS_JWT_ALGORITHM": "none"}, "'jwt_algorithm'"),
        ({"QUART_ROOMS_JWT_ALGORITHM": "RS256"}, "'jwt_private_key_file'"),
        ({"QUART_ROOMS_ACCESS_TOKEN_TTL": "0"}, "'access_token_ttl'"),
        ({"QUART_ROOMS_ALLOWED_ORIGINS": "*"}, "allow_any_origin"),
        ({"QUART_ROOMS_CONFIG": "/no/such/file.toml"}, "QUART_ROOMS_CONFIG"),
    ],
)
def test_bad_settings_name_the_key(environ: dict[str, str], named: str) -> None:
    """Unknown keys and bad values stop the start with a message naming them."""
    with pytest.raises(SettingsError, match=named):
        load_settings(environ=environ)


def test_bad_file_key(tmp_path: Path) -> None:
    """An unknown key in the config file is named with the file."""
    config = tmp_path / "c.toml"
    config.write_text("colour = 'blue'\n")
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        load_settings(environ={"QUART_ROOMS_CONFIG": str(config)})
    config.write_text("port = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(environ={"QUART_ROOMS_CONFIG": str(config)})


def test_generated_secret_is_random_and_kept(tmp_path: Path) -> None:
    """Without a configured secret, one is generated once, kept private, and reused."""
    one = load_settings(environ={}, instance_path=str(tmp_path / "a"))
    two = load_settings(environ={}, instance_path=str(tmp_path / "b"))
    first = jwt_secret(one)
    assert len(first) >= 40
    assert jwt_secret(one) == first
    assert jwt_secret(two) != first
    assert (tmp_path / "a" / "jwt_secret").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("origin", [
    "https://chat.example.com/", "chat.example.com", "https://chat.example.com/chat", "ftp://chat.example.com",
    "https://", "https://Chat.Example.com", "https://chat.example.com:99999", "https://user@chat.example.com",
])
def test_origins_that_no_browser_sends_are_refused(origin: str) -> None:
    """An allowed_origins entry that can never equal a browser's Origin header stops the start."""
    with pytest.raises(SettingsError, match="allowed_origins"):
        load_settings(environ={"QUART_ROOMS_ALLOWED_ORIGINS": origin})


def test_real_origins_are_accepted() -> None:
    """Origins exactly as browsers send them load."""
    settings = load_settings(environ={"QUART_ROOMS_ALLOWED_ORIGINS": "https://chat.example.com,http://10.0.0.5:8080"})
    assert settings.allowed_origins == ["https://chat.example.com", "http://10.0.0.5:8080"]


@pytest.mark.parametrize(("secret", "algorithm", "problem"), [
    ("x", "HS256", "at least 32 bytes"),
    ("a" * 40, "HS256", "repetitive"),
    ("replace-with-64-random-characters", "HS256", "placeholder"),
    ("0123456789abcdef0123456789abcdef0123", "HS512", "at least 64 bytes"),
])
def test_weak_jwt_secrets_are_refused(secret: str, algorithm: str, problem: str) -> None:
    """RFC 7518 section 3.2: an HMAC key as long as the hash at least; no example placeholders."""
    with pytest.raises(SettingsError, match=problem):
        load_settings(environ={"QUART_ROOMS_JWT_SECRET": secret, "QUART_ROOMS_JWT_ALGORITHM": algorithm})


def test_the_example_file_does_not_start_until_its_secret_is_replaced() -> None:
    """config/example.toml as shipped is refused, naming the secret."""
    example = Path(__file__).parent.parent / "config" / "example.toml"
    with pytest.raises(SettingsError, match="jwt_secret.*placeholder"):
        load_settings(environ={"QUART_ROOMS_CONFIG": str(example)})
