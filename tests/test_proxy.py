"""Behind a reverse proxy: forwarded client address and scheme, believed only from trusted proxies."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Api, Server


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"trusted_proxies": ["127.0.0.1"], "login_failures_per_address": 2, "login_failures_per_account": 50,
            "metrics_allow": ["192.0.2.0/24"]}


def _from(address: str, proto: str = "http") -> dict[str, str]:
    return {"X-Forwarded-For": f"{address}, 127.0.0.1", "X-Forwarded-Proto": proto}


async def test_the_forwarded_address_is_the_client(api: Api, admin_api: Api) -> None:
    """Failures counted for one forwarded address do not refuse the same account from another."""
    await admin_api.create_user("bob")
    wrong = {"username": "bob", "password": "wrong-password"}
    for _ in range(3):  # bob now has failures of his own, and 198.51.100.7 is over its limit
        await api.http.post("/api/auth/login", json=wrong, headers=_from("198.51.100.7"))
    refused = await api.http.post("/api/auth/login", json=wrong, headers=_from("198.51.100.7"))
    assert refused.status_code == 429
    elsewhere = await api.http.post("/api/auth/login", json=wrong, headers=_from("198.51.100.8"))
    assert elsewhere.status_code == 401


async def test_the_forwarded_scheme_makes_the_cookie_secure(api: Api, server: Server) -> None:
    """Behind a TLS proxy the refresh cookie is Secure; over plain HTTP it is not."""
    body = {"username": "admin", "password": server.admin_password}
    over_tls = await api.http.post("/api/auth/login", json=body, headers=_from("198.51.100.9", "https"))
    plain = await api.http.post("/api/auth/login", json=body)
    assert "secure" in over_tls.headers["set-cookie"].lower()
    assert "secure" not in plain.headers["set-cookie"].lower()


async def test_metrics_only_for_the_allowed_addresses(api: Api) -> None:
    """/metrics answers the configured network and 404 elsewhere, loopback included."""
    assert (await api.get("/metrics")).status_code == 404
    allowed = await api.get("/metrics", headers=_from("192.0.2.10"))
    assert allowed.status_code == 200 and "quart_rooms_sockets" in allowed.text


async def test_headers_from_an_untrusted_peer_are_ignored(tmp_path: Any, database_url: str) -> None:
    """Without trusted_proxies, a client cannot claim another address or TLS."""
    from tests.conftest import add_admin, make_settings, running

    async with running(make_settings(database_url, tmp_path / "i", login_failures_per_address=2)) as server:
        await add_admin(server)
        async with Api(server) as api:
            body = {"username": "admin", "password": server.admin_password}
            reply = await api.http.post("/api/auth/login", json=body, headers=_from("198.51.100.9", "https"))
            assert "secure" not in reply.headers["set-cookie"].lower()
            assert (await api.get("/metrics")).status_code == 200  # loopback by default
