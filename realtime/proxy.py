"""The client's real address behind our reverse proxy (nginx), trusted only from that proxy.

nginx connects to the web process from its own address and says who the client is in `X-Real-IP`
(deploy/nginx/iaposte.conf sets it, overwriting whatever the client sent). This ASGI middleware
puts that address in the scope's `client`, which Django turns into REMOTE_ADDR and Channels
passes to the consumers, so throttles, local-mode checks and audit all see the real client. It
believes the header only when the connection comes from an address in REALTIME_TRUSTED_PROXIES;
from anyone else the header is ignored, so a client cannot pick its own address.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks() -> list[Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in settings.REALTIME_TRUSTED_PROXIES]


def _address(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None


class TrustedProxyMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.trusted = _networks()

    def _real_client(self, scope: dict[str, Any]) -> tuple[str, int] | None:
        peer = scope.get("client")
        peer_address = _address(peer[0]) if peer else None
        if peer_address is None or not any(peer_address in network for network in self.trusted):
            return None
        for name, value in scope.get("headers", []):
            if name == b"x-real-ip":
                real = _address(value.decode("latin-1"))
                return (str(real), 0) if real is not None else None
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.trusted and scope["type"] in ("http", "websocket") and (client := self._real_client(scope)) is not None:
            scope = {**scope, "client": client}
        await self.app(scope, receive, send)
