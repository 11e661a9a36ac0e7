"""Request rate limits: per API key, per staff user, per anonymous client address.

Rates come from `settings.REALTIME_THROTTLE_RATES`, read when each request is checked (DRF's own
throttles copy their rates once, at import). A refusal is a 429 in our error shape with
`Retry-After` (see `realtime.exceptions`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from .auth.principals import Principal


def _key_id(request: Request) -> int | None:
    principal = request.auth
    if isinstance(principal, Principal) and principal.api_key is not None:
        return principal.api_key.pk
    return None


class RealtimeThrottle(SimpleRateThrottle):
    """Sync, counting in the default cache (DRF's)."""

    def get_rate(self) -> str | None:
        return settings.REALTIME_THROTTLE_RATES.get(self.scope or "")


class ApiKeyThrottle(RealtimeThrottle):
    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        key_id = _key_id(request)
        if key_id is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": key_id}


class StaffThrottle(RealtimeThrottle):
    scope = "staff"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        user = request.user
        if _key_id(request) is not None or user is None or not user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": user.pk}


class AnonymousThrottle(RealtimeThrottle):
    """By client address: REMOTE_ADDR, or X-Forwarded-For only as far as REALTIME_NUM_PROXIES trusts it."""

    scope = "anonymous"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if _key_id(request) is not None or (request.user is not None and request.user.is_authenticated):
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
