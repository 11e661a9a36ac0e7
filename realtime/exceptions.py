"""Domain errors and the one DRF exception handler that turns every error into our JSON shape:

{"success": false, "error": {"code": ..., "message": ..., "details": ...}}
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import OperationalError
from django.http import Http404
from django.utils.translation import gettext as _
from redis.exceptions import RedisError
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import set_rollback

logger = logging.getLogger(__name__)


class RealtimeError(Exception):
    """Base of the errors our API reports; `status`, `code` and a user-facing `message`."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class InvalidInput(RealtimeError):
    """The request names a field whose value we cannot accept."""

    def __init__(self, field: str, message: str, *, code: str = "invalid_request"):
        super().__init__(f"{field}: {message}", details={"field": field})
        self.code = code


class PayloadTooLarge(RealtimeError):
    status = 413
    code = "payload_too_large"


class CallNotFound(RealtimeError):
    status = 404
    code = "call_not_found"


class CallStateConflict(RealtimeError):
    """The call is not in a state that allows this change (ending an ended call, say)."""

    status = 409
    code = "call_not_active"


class TooManyCalls(RealtimeError):
    """The concurrency limit (in all, or for this API key) is reached: nothing was sent upstream."""

    status = 429
    code = "too_many_active_calls"


class IdempotencyConflict(RealtimeError):
    """The Idempotency-Key was used with another request, or its first request is still running."""

    status = 409
    code = "idempotency_key_conflict"


class UpstreamError(RealtimeError):
    """OpenAI refused the request or could not be reached."""

    status = 502
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamThrottled(UpstreamError):
    status = 429
    code = "upstream_rate_limited"


def _encodable(value: Any) -> Any:
    """Messages and details echo what the client sent; a lone surrogate in it would make the JSON
    renderer fail (a 500 page instead of our 400), so it is shown escaped."""
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encodable(v) for v in value]
    return value


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": _encodable(str(message)), "details": _encodable(details or {})}}


def _error_response(status: int, code: str, message: str, details: Any = None, headers: dict | None = None) -> Response:
    return Response(error_body(code, message, details), status=status, headers=headers)


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested ValidationError detail as {"session.voice": ["..."]}."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            out.update(_flatten(value, name))
        return out
    if isinstance(detail, list) and detail and all(not isinstance(d, (dict, list)) for d in detail):
        return {prefix or "request": [str(d) for d in detail]}
    if isinstance(detail, list):
        out = {}
        for i, value in enumerate(detail):
            out.update(_flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix or "request": [str(detail)]}


# Seconds a client told "too busy" (429, 503) waits before trying again, when nothing more precise is known.
OVERLOAD_RETRY_AFTER = "1"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Our shape for every error we expect; None for the rest, which DRF re-raises so that it
    reaches Django's 500 path (the `got_request_exception` signal, the `django.request` log, error
    trackers) and `handler500` answers in our shape."""
    set_rollback()
    if isinstance(exc, RealtimeError):
        error_headers = exc.headers
        if exc.status in (429, 503) and "Retry-After" not in error_headers:
            error_headers = {**error_headers, "Retry-After": OVERLOAD_RETRY_AFTER}
        return _error_response(exc.status, exc.code, exc.message, exc.details, error_headers)
    if isinstance(exc, (OperationalError, RedisError)):
        # Past capacity (no free database connection in time), or the database or Redis (the
        # shared cache: throttles) away: a retryable 503, never a 500. The transaction was
        # rolled back above, so nothing is half-written.
        logger.warning("Storage unavailable in %s: %s", context.get("view").__class__.__name__, exc)
        return _error_response(
            503, "service_unavailable", _("The service is busy; try again shortly."), headers={"Retry-After": OVERLOAD_RETRY_AFTER}
        )
    if isinstance(exc, RequestDataTooBig):
        return _error_response(413, PayloadTooLarge.code, _("The request body is too large."))
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        # DATA_UPLOAD_MAX_NUMBER_FIELDS / _FILES: Django's own caps on a form body.
        return _error_response(413, PayloadTooLarge.code, _("The request has too many form fields or files."))
    if isinstance(exc, drf.ValidationError):
        fields = _flatten(exc.detail)
        field, messages = next(iter(fields.items()))
        return _error_response(400, "invalid_request", f"{field}: {messages[0]}", {"field": field, "fields": fields})
    if isinstance(exc, drf.ParseError):
        return _error_response(400, "malformed_request", _("The request body could not be parsed: %(error)s") % {"error": exc.detail})
    if isinstance(exc, drf.UnsupportedMediaType):
        return _error_response(415, "unsupported_media_type", _("Send application/json or multipart/form-data."))
    if isinstance(exc, (Http404, drf.NotFound)):
        return _error_response(404, "not_found", _("Not found."))
    if isinstance(exc, PermissionDenied):
        return _error_response(403, "permission_denied", _("You do not have permission to do this."))
    if isinstance(exc, drf.Throttled):
        # getattr: DRF sets `wait` in Throttled.__init__, but its type stubs do not declare it.
        wait = getattr(exc, "wait", None)
        headers = {"Retry-After": str(wait)} if wait is not None else None
        return _error_response(429, "throttled", str(exc.detail), {"retry_after": wait}, headers)
    if isinstance(exc, drf.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        # Set by DRF on NotAuthenticated/AuthenticationFailed only (not declared by its type stubs).
        auth_header = getattr(exc, "auth_header", None)
        headers = {"WWW-Authenticate": auth_header} if auth_header else None
        return _error_response(exc.status_code, code, str(exc.detail), headers=headers)
    return None
