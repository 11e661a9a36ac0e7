"""DRF permission for every realtime endpoint; who is asking is `request.auth` (see `realtime.auth`)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from .auth.principals import Principal


class RealtimeAccess(BasePermission):
    """Reads need `can_view`, POST `can_create`, DELETE `can_end`; which calls is the selectors' job.

    Nobody (no key, no staff session, not local) gets a 401 with a Bearer challenge; a staff user
    lacking the permission gets a 403. A key asking for another key's call gets a 404 later, from
    the scoped selectors, so that call ids do not leak.
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.auth
        if not isinstance(principal, Principal):
            if request.successful_authenticator is None:
                raise exceptions.NotAuthenticated(_("Authentication required: send an API key as 'Authorization: Bearer <key>'."))
            self.message = _("This account may not use the realtime API.")
            return False
        if request.method == "POST":
            allowed, permission = principal.can_create, "realtime.add_call"
        elif request.method == "DELETE":
            allowed, permission = principal.can_end, "realtime.end_call"
        else:
            allowed, permission = principal.can_view, "realtime.view_call"
        if not allowed:
            self.message = _("Your account lacks the permission %(permission)s.") % {"permission": permission}
        return allowed


class StaffOnly(BasePermission):
    """Staff with a model permission (or local mode), never API keys: `required` (or `permission()`
    when it depends on the request) names it, `refusal` says who may."""

    required = ""
    refusal = ""

    def permission(self, request: Request) -> str:
        return self.required

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.auth if isinstance(request.auth, Principal) else None
        if principal is None and request.successful_authenticator is None:
            raise exceptions.NotAuthenticated(_("Authentication required: send an API key as 'Authorization: Bearer <key>'."))
        if principal is not None and principal.kind == "local":
            return True
        permission = self.permission(request)
        if principal is None or principal.kind != "staff" or not request.user.has_perm(permission):
            self.message = _(self.refusal) % {"permission": permission}
            return False
        return True


class SipRouteAccess(StaffOnly):
    """SIP routes decide every incoming call, whoever's: staff with the model permissions (or local mode), not API keys."""

    ACTIONS = {"GET": "view", "HEAD": "view", "OPTIONS": "view", "POST": "add", "PATCH": "change", "PUT": "change", "DELETE": "delete"}
    refusal = gettext_noop("SIP routes are managed by staff with the permission %(permission)s.")

    def permission(self, request: Request) -> str:
        return f"realtime.{self.ACTIONS.get(request.method or 'GET', 'change')}_siproute"


class CallDataErase(StaffOnly):
    """Erasing a call's personal data (a person's request) is for staff with the permission
    `realtime.erase_call_data` (or local mode), never for API keys."""

    required = "realtime.erase_call_data"
    refusal = gettext_noop("A call's data is erased by staff with the permission %(permission)s.")
