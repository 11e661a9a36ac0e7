"""Requests for a host we do not serve: refused in one line, never with a traceback.

Django answers a `Host` outside ALLOWED_HOSTS with a 400 page (an HTML debug page with DEBUG) and
logs the exception with its traceback under `django.security.DisallowedHost`: anyone could fill
the logs with one header. Under /api/ the middleware answers our JSON error shape itself, before
any other middleware asks for the host; `realtime.logfilters.OneLineSecurityLog` keeps the rest of the site's
security log to one line per refusal.
"""

from __future__ import annotations

import logging

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from django.utils.translation import gettext as _

from .exceptions import error_body

logger = logging.getLogger("django.security.DisallowedHost")


class DisallowedHostMiddleware(MiddlewareMixin):
    """First in MIDDLEWARE: an API request for an unknown host gets our JSON 400."""

    def process_request(self, request: HttpRequest) -> JsonResponse | None:
        if not request.path.startswith("/api/"):
            return None
        try:
            request.get_host()
        except DisallowedHost as exc:
            logger.warning("%s (%s %s)", exc, request.method, request.path[:200])
            return JsonResponse(error_body("bad_host", _("This server does not answer to that host name.")), status=400)
        return None
