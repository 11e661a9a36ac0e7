from __future__ import annotations

from collections import deque
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.utils.translation import gettext_lazy as _

# Statements each database connection keeps for `connection.queries` under DEBUG (local mode:
# `make run`, `make run-scaled`). Django keeps 9,000, with their parameters, among them every
# call's SDP offer and answer (4 KB each): tens of MB per connection that has served a few
# thousand calls, in every thread's connection of a process. Measured on `make run-scaled`, 3,000
# calls at 50 calls/s: the web processes grew from 128 to 193-207 MiB, and to 165 MiB with 100
# kept (docs/benchmarks.md, "Statistics for listeners only, and DEBUG's statement log"). The
# last statements are what one looks at.
DEBUG_QUERIES_KEPT = 100


def keep_fewer_queries(sender: object, connection: Any, **kwargs: object) -> None:
    """On each new database connection under DEBUG: keep only its last DEBUG_QUERIES_KEPT statements."""
    if settings.DEBUG and connection.queries_log.maxlen != DEBUG_QUERIES_KEPT:
        connection.queries_limit = DEBUG_QUERIES_KEPT
        connection.queries_log = deque(connection.queries_log, maxlen=DEBUG_QUERIES_KEPT)


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = _("Realtime calls")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out
        from django.db.backends.signals import connection_created

        from . import (
            checks,  # noqa: F401  (registers the system checks)
            services,
        )

        def audit_lockout(sender: object, *, username: str | None = None, ip_address: str | None = None, **kwargs: object) -> None:
            services.staff_locked_out(username=username or "", address=ip_address)

        # Strong reference kept by the app config: the receiver is a closure.
        self._audit_lockout = audit_lockout
        user_locked_out.connect(audit_lockout, dispatch_uid="realtime.audit_lockout")
        connection_created.connect(keep_fewer_queries, dispatch_uid="realtime.keep_fewer_queries")
