"""API requests refused before any view: one log line, our JSON error shape, never a traceback.

**A host we do not serve.**
Django answers a `Host` outside ALLOWED_HOSTS with a 400 page (an HTML debug page with DEBUG) and
logs the exception with its traceback under `django.security.DisallowedHost`: anyone could fill
the logs with one header. Under /api/ the middleware answers our JSON error shape itself, before
any other middleware asks for the host; `realtime.logfilters.OneLineSecurityLog` keeps the rest of the site's
security log to one line per refusal.

**A chunked body without Content-Length.** Django reads a request body only up to its
Content-Length, so such a body would be read as empty (a valid create answered `sdp: required`).
Bodies here are small (REALTIME_MAX_BODY_BYTES) and every HTTP client sends a length for them, so
we refuse instead: 411 Length Required. (nginx in front buffers the body and sets the length.)
"""

from __future__ import annotations

import logging

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, JsonResponse
from django.utils import translation
from django.utils.deprecation import MiddlewareMixin
from django.utils.translation import gettext as _

from .exceptions import error_body

logger = logging.getLogger("django.security.DisallowedHost")


class ApiRequestGuardMiddleware(MiddlewareMixin):
    """First in MIDDLEWARE: an API request for an unknown host gets our JSON 400, a chunked body
    without a length our JSON 411."""

    def process_request(self, request: HttpRequest) -> JsonResponse | None:
        if not request.path.startswith("/api/"):
            return None
        # Before LocaleMiddleware: the thread still speaks its previous request's language.
        with translation.override(translation.get_language_from_request(request)):
            return self._refusal(request)

    def _refusal(self, request: HttpRequest) -> JsonResponse | None:
        try:
            request.get_host()
        except DisallowedHost as exc:
            logger.warning("%s (%s %s)", exc, request.method, request.path[:200])
            return JsonResponse(error_body("bad_host", _("This server does not answer to that host name.")), status=400)
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower() and not request.META.get("CONTENT_LENGTH"):
            return JsonResponse(
                error_body("length_required", _("Send the body with a Content-Length header (chunked bodies are not accepted).")),
                status=411,
            )
        return None
