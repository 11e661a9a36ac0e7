"""WebSocket handshakes: the principal of an ASGI scope, by the same rules as the REST API."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator
from django.conf import settings

from .principals import LOCAL, KeyRefused, Principal, bearer_token, key_for, key_principal, local_client, same_origin, staff_principal

# Offered by browser clients next to "bearer.<key>" (browsers cannot set an Authorization header on
# a WebSocket); the server accepts this one, never echoing the key back.
WEBSOCKET_SUBPROTOCOL = "iaposte.realtime"
WEBSOCKET_BEARER_PREFIX = "bearer."


def _scope_headers(scope: dict[str, Any]) -> dict[str, str]:
    # ASGI headers are (bytes, bytes) pairs, names lowercased; latin-1 as HTTP/1.1 prescribes.
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}


def websocket_token(scope: dict[str, Any]) -> str | None:
    """The bearer key of a WebSocket handshake: `Authorization` header, or a `bearer.<key>` subprotocol.

    Deliberately not `?token=` in the URL: URLs end up in access logs, proxies' logs and browser
    history, where a key would outlive its revocation in plain sight.
    """
    headers = _scope_headers(scope)
    if "authorization" in headers:
        return bearer_token(headers["authorization"])
    for protocol in scope.get("subprotocols") or []:
        if protocol.startswith(WEBSOCKET_BEARER_PREFIX):
            return str(protocol).removeprefix(WEBSOCKET_BEARER_PREFIX)
    return None


def websocket_subprotocol(scope: dict[str, Any]) -> str | None:
    """The subprotocol a consumer should accept with (`accept(subprotocol=...)`), never the key."""
    return WEBSOCKET_SUBPROTOCOL if WEBSOCKET_SUBPROTOCOL in (scope.get("subprotocols") or []) else None


class BrowserOriginValidator(OriginValidator):
    """Channels' AllowedHostsOriginValidator, except that a handshake with no Origin is let through.

    Browsers always send Origin on a WebSocket handshake, so a missing one means a server-side
    client (an integrator's script with an API key), which cross-site protection does not concern;
    Channels' own validator would refuse it. `principal_from_scope` then decides who it is.
    """

    def __init__(self, application: Any) -> None:
        super().__init__(application, settings.ALLOWED_HOSTS)

    def valid_origin(self, parsed_origin: Any) -> bool:
        return parsed_origin is None or bool(super().valid_origin(parsed_origin))


async def principal_from_scope(scope: dict[str, Any]) -> Principal | None:
    """The principal of a WebSocket (ASGI) scope, by the same rules as the REST API; None refuses.

    Reads the `authorization` header or a `bearer.<key>` subprotocol, the session `user` put there
    by Channels' AuthMiddlewareStack, and the `client` address (local mode).
    """
    token = websocket_token(scope)
    if token is not None:
        try:
            key = await database_sync_to_async(key_for)(token)
        except KeyRefused:
            return None
        return key_principal(key)
    headers = _scope_headers(scope)
    if not same_origin(headers.get("origin"), headers.get("host")):
        return None
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        if (staff := await database_sync_to_async(staff_principal)(user)) is not None:
            return staff
    client = scope.get("client") or (None, None)
    if local_client(client[0]):
        return LOCAL
    return None
