from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = _("Realtime calls")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out

        from . import (
            checks,  # noqa: F401  (registers the system checks)
            services,
        )

        def audit_lockout(sender: object, *, username: str | None = None, ip_address: str | None = None, **kwargs: object) -> None:
            services.staff_locked_out(username=username or "", address=ip_address)

        # Strong reference kept by the app config: the receiver is a closure.
        self._audit_lockout = audit_lockout
        user_locked_out.connect(audit_lockout, dispatch_uid="realtime.audit_lockout")
