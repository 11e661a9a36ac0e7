"""HTML views: the demo page, and the API's JSON 404. The REST API lives in `api.py`."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie

from . import catalogue, sessions
from .auth.pages import page_access_required
from .auth.principals import Principal
from .exceptions import InvalidInput, error_body
from .models import Call


def _served_models() -> dict[str, str]:
    """Each model the form offers -> the model the server sends for it today (aliases and shut-down
    models resolved by the same code as a real request); models it would refuse are left out."""
    served = {}
    for model in dict.fromkeys([settings.REALTIME_DEFAULT_MODEL, *sorted(sessions.GA_MODELS | set(settings.REALTIME_MODEL_ALIASES))]):
        try:
            served[model] = sessions.parse_session({"model": model}).upstream_model
        except InvalidInput:
            continue
    return served


@csrf_exempt
def api_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """No such path under /api/: our JSON 404, whatever the method (no CSRF check for a refusal)."""
    return JsonResponse(error_body("not_found", _("Not found."), {"path": request.path[:200]}), status=404)


@ensure_csrf_cookie
@page_access_required
def demo(request: HttpRequest, principal: Principal) -> HttpResponse:
    """`/realtime-api.html`: make a WebRTC call from the browser and watch every call live.

    The page talks only to our public API and WebSocket feeds; the CSRF cookie is set so its
    POST/DELETE requests keep working once the API adds session authentication.
    """
    config = {
        "apiBase": "/api/realtime",
        "feedPath": "/ws/realtime/calls",
        # None by default: no public STUN host is contacted (see settings.REALTIME_ICE_SERVERS).
        "iceServers": settings.REALTIME_ICE_SERVERS,
        # Staff without realtime.end_call may watch but not end calls.
        "canEnd": principal.can_end,
        # "Transcribe what I say" asks for the caller's words with this model.
        "transcriptionModel": catalogue.DEFAULT_TRANSCRIPTION_MODEL,
    }
    context = {
        # Shown as "requested → sent" where they differ; the default is selected, as a session
        # naming no model gets it.
        "models": _served_models().items(),
        "default_model": settings.REALTIME_DEFAULT_MODEL,
        "voices": sessions.VOICES,
        "default_voice": sessions.DEFAULT_VOICE,
        "statuses": Call.Status.choices,
        "config": config,
    }
    return render(request, "realtime-api.html", context)
