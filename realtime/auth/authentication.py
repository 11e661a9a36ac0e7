"""DRF authentication: each class sets `request.auth` to the request's `Principal`.

Listed in `REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]`, bearer keys first (the first class
names the `WWW-Authenticate` challenge of a 401). A class that recognises who is asking but finds
them unfit (a staff session from another origin, a non-staff account) returns the user with no
principal: DRF then stops looking, and `RealtimeAccess` answers 403 rather than 401.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.request import Request

from .principals import LOCAL, KeyRefused, Principal, bearer_token, key_for, key_principal, local_client, same_origin, staff_principal


def _from_this_host(request: Request) -> bool:
    return same_origin(request.headers.get("Origin"), request._request.get_host())


def _local(request: Request) -> bool:
    """Local mode, a loopback client, and (for browsers) this very origin."""
    return local_client(request._request.META.get("REMOTE_ADDR")) and _from_this_host(request)


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Bearer <key>`: the key's principal. A key acts as itself, never as its owner
    (who may be staff and see every call)."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, Principal] | None:
        token = bearer_token(request.META.get("HTTP_AUTHORIZATION", ""))
        if token is None:
            return None
        try:
            key = key_for(token)
        except KeyRefused as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        return AnonymousUser(), key_principal(key)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class StaffSessionAuthentication(SessionAuthentication):
    """A session login (CSRF-checked by DRF): the staff principal, from this origin only.

    A logged-in account that is not staff may still come in as local (local mode, loopback); else
    it is known but may not use the API (403).
    """

    def authenticate(self, request: Request) -> tuple[object, Principal | None] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user = result[0]
        staff = staff_principal(user)
        if staff is None:
            return (user, LOCAL) if _local(request) else (user, None)
        return user, staff if _from_this_host(request) else None


class LocalModeAuthentication(BaseAuthentication):
    """No credentials, `REALTIME_LOCAL_MODE`, a loopback client: the local principal."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, Principal] | None:
        return (AnonymousUser(), LOCAL) if _local(request) else None


def request_principal(request: Request) -> Principal:
    """The principal of a request `RealtimeAccess` let in (views run only after it did)."""
    principal = request.auth
    if not isinstance(principal, Principal):
        raise exceptions.NotAuthenticated()
    return principal
