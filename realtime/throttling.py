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

from .models import ApiKey


class _RealtimeThrottle(SimpleRateThrottle):
    def get_rate(self) -> str | None:
        return settings.REALTIME_THROTTLE_RATES.get(self.scope)


class ApiKeyThrottle(_RealtimeThrottle):
    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.auth, ApiKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}


class StaffThrottle(_RealtimeThrottle):
    scope = "staff"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        user = request.user
        if isinstance(request.auth, ApiKey) or user is None or not user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": user.pk}


class AnonymousThrottle(_RealtimeThrottle):
    """By client address: REMOTE_ADDR, or X-Forwarded-For only as far as REALTIME_NUM_PROXIES trusts it."""

    scope = "anonymous"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiKey) or (request.user is not None and request.user.is_authenticated):
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
