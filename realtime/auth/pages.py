"""HTML pages (the demo): the same rules, for a plain Django request."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from .principals import LOCAL, Principal, local_client, staff_principal

PageView = Callable[..., HttpResponse]


def principal_from_page(request: HttpRequest) -> Principal | None:
    """The principal of a plain Django request: staff session or local mode."""
    if (staff := staff_principal(getattr(request, "user", None))) is not None:
        return staff
    if local_client(request.META.get("REMOTE_ADDR")):
        return LOCAL
    return None


def page_access_required(view: PageView) -> Callable[..., HttpResponse]:
    """For pages showing calls (the demo): local mode, or a staff login with `realtime.view_call`.

    Anonymous visitors go to the login page; logged-in users without the permission get a 403.
    The view is called as `view(request, principal, ...)` (the principal's `can_end` drives "Terminer").
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        principal = principal_from_page(request)
        if principal is None or not principal.can_view:
            if getattr(request, "user", None) is not None and request.user.is_authenticated:
                raise PermissionDenied
            return redirect_to_login(request.get_full_path())
        return view(request, principal, *args, **kwargs)

    return wrapper
