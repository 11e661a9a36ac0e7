"""Password guessing on the staff sign-in pages: django-axes hooks (client address, lockout page).

django-axes counts failed sign-ins per user name and client address in the database (shared by
every process) and refuses that pair once it reaches `AXES_FAILURE_LIMIT`, even with the right
password, until the cool-off ends or staff reset it (admin "Access attempts", or
`manage.py axes_reset_username`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.throttling import BaseThrottle


def client_address(request: HttpRequest) -> str | None:
    """The address the API's throttling uses: X-Forwarded-For only as far as REALTIME_NUM_PROXIES trusts it."""
    return BaseThrottle().get_ident(request)  # type: ignore[arg-type]


def locked_out(request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any] | None) -> HttpResponse:
    """The sign-in page, saying why nothing can be done from here now (429, as the API's throttling)."""
    hours = settings.AXES_COOLOFF_TIME
    return render(
        request,
        "registration/login.html",
        {"locked_out": True, "cooloff_minutes": round(hours * 60) if hours else None},
        status=429,
    )
