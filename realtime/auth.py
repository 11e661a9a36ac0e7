"""Who is asking, and what they may do: one set of rules for the REST API, the sockets and the pages.

A request is made by one principal, or by nobody (refused with 401):

- an **API key** (integrators, `Authorization: Bearer <key>`): creates calls, and sees and ends
  only the calls it created. A key always acts as itself, whoever owns it;
- a **staff user** (session login): sees every call with `realtime.view_call`, creates calls with
  `realtime.add_call`, ends them with `realtime.end_call`;
- **local** (only with `REALTIME_LOCAL_MODE`): an anonymous request from loopback, which may do
  everything, so the seed's examples work as written on a developer's machine.

A bad, revoked or expired key is refused outright, even from loopback: a client that sends a key
means to use it, and silently treating it as anonymous would hide the mistake.

Cookies are ambient (a browser sends them to us from any site), so the cookie-less "local" and the
session principals also require the request's `Origin`, when there is one, to be this very host:
another site open in the same browser cannot drive the API or a socket on the user's behalf.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from .models import API_KEY_PREFIX, ApiKey, Call, CallEvent, hash_api_key

if TYPE_CHECKING:
    from rest_framework.request import Request

# Offered by browser clients next to "bearer.<key>" (browsers cannot set an Authorization header on
# a WebSocket); the server accepts this one, never echoing the key back.
WEBSOCKET_SUBPROTOCOL = "iaposte.realtime"
WEBSOCKET_BEARER_PREFIX = "bearer."
# last_used_at is a hint, not an audit log: write it at most once a minute per key, so a busy key
# does not turn every read into a database write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A generated key is "iap_" + 43 characters; anything far longer is not one of ours.
MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class Principal:
    kind: Literal["api_key", "staff", "local"]
    can_view: bool
    can_create: bool
    can_end: bool
    api_key: ApiKey | None = None
    username: str = ""

    @property
    def sees_all(self) -> bool:
        return self.api_key is None

    @property
    def actor(self) -> str:
        """The CallEvent actor for changes this principal makes."""
        return CallEvent.Actor.ADMIN if self.kind == "staff" else CallEvent.Actor.API

    @property
    def end_reason(self) -> str:
        return Call.EndReason.ADMIN_HANGUP if self.kind == "staff" else Call.EndReason.API_HANGUP

    def audit(self) -> dict[str, Any]:
        """What the audit trail records about who did it (never the key itself)."""
        if self.api_key is not None:
            return {"api_key": self.api_key.prefix}
        if self.kind == "staff":
            return {"staff_user": self.username}
        return {}


LOCAL = Principal(kind="local", can_view=True, can_create=True, can_end=True)


def key_principal(key: ApiKey) -> Principal:
    return Principal(kind="api_key", can_view=True, can_create=True, can_end=True, api_key=key)


def staff_principal(user: Any) -> Principal | None:
    """A staff principal for an active staff user (checks permissions: may query the database)."""
    if user is None or not user.is_authenticated or not user.is_active or not user.is_staff:
        return None
    return Principal(
        kind="staff",
        can_view=user.has_perm("realtime.view_call"),
        can_create=user.has_perm("realtime.add_call"),
        can_end=user.has_perm("realtime.end_call"),
        username=user.get_username(),
    )


# --- keys -----------------------------------------------------------------------------------


class KeyRefused(Exception):
    """The key is unknown, revoked or expired; the message says which, for the integrator."""


def key_for(raw: str) -> ApiKey:
    """The usable key for a raw bearer token, or KeyRefused. Notes the key's last use."""
    if not raw.startswith(API_KEY_PREFIX) or len(raw) > MAX_KEY_LENGTH:
        raise KeyRefused(_("Invalid API key."))
    # One indexed equality on the hash: no stored secret to compare, so no timing to measure.
    key = ApiKey.objects.filter(key_hash=hash_api_key(raw)).first()
    if key is None:
        raise KeyRefused(_("Invalid API key."))
    now = timezone.now()
    if key.revoked_at is not None:
        raise KeyRefused(_("This API key has been revoked."))
    if key.expires_at is not None and key.expires_at <= now:
        raise KeyRefused(_("This API key has expired."))
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None for any other scheme."""
    scheme, _sep, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


class ApiKeyAuthentication(BaseAuthentication):
    """DRF authentication by `Authorization: Bearer <key>`; request.auth is the ApiKey."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, ApiKey] | None:
        token = bearer_token(request.META.get("HTTP_AUTHORIZATION", ""))
        if token is None:
            return None
        try:
            key = key_for(token)
        except KeyRefused as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        # The key acts as itself: never as its owner, who may be staff and see every call.
        return AnonymousUser(), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


# --- origins and addresses ------------------------------------------------------------------


def is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return False
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def same_origin(origin: str | None, host: str | None) -> bool:
    """True when there is no Origin (not a browser, or a same-origin GET) or it names `host`."""
    if origin is None:
        return True
    parts = urlsplit(origin)
    return bool(host) and parts.scheme in ("http", "https", "ws", "wss") and parts.netloc.lower() == str(host).lower()


# --- principals -----------------------------------------------------------------------------


def principal_from_request(request: Request) -> Principal | None:
    """The principal of a DRF request (authentication already ran). Sync: may query permissions."""
    if isinstance(request.auth, ApiKey):
        return key_principal(request.auth)
    django_request = request._request
    origin = request.headers.get("Origin")
    host = django_request.get_host()
    if (staff := staff_principal(request.user)) is not None:
        return staff if same_origin(origin, host) else None
    if settings.REALTIME_LOCAL_MODE and is_loopback(django_request.META.get("REMOTE_ADDR")) and same_origin(origin, host):
        return LOCAL
    return None


def principal_from_page(request: HttpRequest) -> Principal | None:
    """The principal of a plain Django request (the demo page): staff session or local mode."""
    if (staff := staff_principal(getattr(request, "user", None))) is not None:
        return staff
    if settings.REALTIME_LOCAL_MODE and is_loopback(request.META.get("REMOTE_ADDR")):
        return LOCAL
    return None


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
            return protocol.removeprefix(WEBSOCKET_BEARER_PREFIX)
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
        return parsed_origin is None or super().valid_origin(parsed_origin)


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
    if settings.REALTIME_LOCAL_MODE and is_loopback(client[0]):
        return LOCAL
    return None


# --- what a principal may do with a call ----------------------------------------------------


def may_see_calls_of(principal: Principal | None, *, api_key_id: int | None) -> bool:
    """Whether `principal` may see a call created by the key `api_key_id` (None: not by a key)."""
    if principal is None or not principal.can_view:
        return False
    return principal.sees_all or (principal.api_key is not None and principal.api_key.pk == api_key_id)


def may_see_call(principal: Principal | None, call: Call) -> bool:
    return may_see_calls_of(principal, api_key_id=call.api_key_id)


def may_end_call(principal: Principal | None, call: Call) -> bool:
    return may_see_call(principal, call) and principal is not None and principal.can_end


# --- pages ----------------------------------------------------------------------------------


def page_access_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """For pages showing calls (the demo): local mode, or a staff login with `realtime.view_call`.

    Anonymous visitors go to the login page; logged-in users without the permission get a 403.
    The view finds the principal in `request.realtime_principal` (its `can_end` drives "Terminer").
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        principal = principal_from_page(request)
        if principal is None or not principal.can_view:
            if getattr(request, "user", None) is not None and request.user.is_authenticated:
                raise PermissionDenied
            return redirect_to_login(request.get_full_path())
        request.realtime_principal = principal  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapper
