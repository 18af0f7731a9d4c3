"""The client's address and scheme behind a reverse proxy, believed only from trusted proxies.

A proxy in front of the server (nginx in deploy/) sends the client's address
in `X-Forwarded-For` and the scheme in `X-Forwarded-Proto`. Anyone can send
those headers, so they are read only when the connection comes from an
address in `trusted_proxies`; the client is then the nearest hop in
X-Forwarded-For that is not itself a trusted proxy (RFC 7239 section 5.2
describes the same chain for `Forwarded`). The sign-in throttle, the logs and
the refresh cookie's `Secure` flag all see the result.

Hypercorn's ProxyFixMiddleware trusts a number of hops from any peer, which
lets a client that reaches the server directly claim any address, hence this
small middleware.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """Addresses or CIDR blocks as networks; ValueError names a bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or CIDR block") from exc
    return networks


def in_networks(address: str | None, networks: list[Network]) -> bool:
    """True when `address` is an IP address inside one of the networks."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


class TrustedProxies:
    """ASGI middleware: rewrite scope["client"] and scope["scheme"] from a trusted proxy's headers."""

    def __init__(self, app: ASGIApp, networks: list[Network]) -> None:
        self.app = app
        self.networks = networks

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] in ("http", "websocket") and self.networks:
            client = scope.get("client")
            if client and in_networks(client[0], self.networks):
                self._apply(scope)  # in place: Hypercorn's access log reads the same scope
        await self.app(scope, receive, send)

    def _apply(self, scope: Scope) -> None:
        forwarded_for: list[str] = []
        proto = None
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                forwarded_for += [part.strip() for part in value.decode("latin-1").split(",") if part.strip()]
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").split(",")[0].strip().lower()
        for hop in reversed(forwarded_for):  # nearest first: skip our own proxies
            if not in_networks(hop, self.networks):
                scope["client"] = (hop, 0)
                break
        if proto in ("http", "https"):
            secure = proto == "https"
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = proto
