"""Reads: filtered call lists, a call's events, statistics. All aggregation happens in SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.models import Avg, Count, Q, QuerySet
from django.utils.translation import gettext as _

from .exceptions import CallNotFound
from .models import Call, CallEvent

if TYPE_CHECKING:
    from .auth import Principal


def visible_calls(principal: Principal | None) -> QuerySet[Call]:
    """The calls `principal` may see: a key its own, staff and local mode all.

    `None` means an internal caller (admin, pushes, background jobs): every call. Requests always
    pass their principal, so a key asking for another key's call finds nothing (404, not 403:
    call ids do not leak).
    """
    if principal is None or principal.sees_all:
        return Call.objects.all()
    return Call.objects.filter(api_key=principal.api_key)


def call_get(*, call_id: str, principal: Principal | None = None) -> Call:
    try:
        return visible_calls(principal).get(call_id=call_id)
    except Call.DoesNotExist:
        message = _("No call with id '%(id)s'.") % {"id": call_id[:100]}
        raise CallNotFound(message, details={"call_id": call_id[:100]}) from None


def call_list(*, status: str | None = None, principal: Principal | None = None) -> QuerySet[Call]:
    calls = visible_calls(principal).defer("sdp_offer", "sdp_answer", "session_requested", "session_upstream")
    return calls.filter(status=status) if status else calls


def call_events(*, call: Call, event_type: str | None = None) -> QuerySet[CallEvent]:
    events = CallEvent.objects.filter(call=call).order_by("id")
    return events.filter(event_type=event_type) if event_type else events


def _counts_by(calls: QuerySet[Call], field: str) -> dict[str, int]:
    rows = calls.order_by().values_list(field).annotate(n=Count("id"))
    return {key: n for key, n in rows}


def stats(*, principal: Principal | None = None) -> dict[str, Any]:
    """Totals over the calls `principal` may see (a key's own; every call for the rest)."""
    calls = visible_calls(principal)
    events = CallEvent.objects.filter(call__in=calls) if principal is not None and not principal.sees_all else CallEvent.objects.all()
    totals = calls.aggregate(
        total_calls=Count("id"),
        pending_calls=Count("id", filter=Q(status=Call.Status.PENDING)),
        active_calls=Count("id", filter=Q(status=Call.Status.ACTIVE)),
        ended_calls=Count("id", filter=Q(status=Call.Status.ENDED)),
        failed_calls=Count("id", filter=Q(status=Call.Status.FAILED)),
        avg_duration_seconds=Avg("duration_seconds", filter=Q(status=Call.Status.ENDED)),
    )
    totals["avg_duration_seconds"] = round(totals["avg_duration_seconds"] or 0.0, 1)
    return {
        **totals,
        "total_events": events.count(),
        "calls_by_model": _counts_by(calls, "model"),
        "calls_by_voice": _counts_by(calls, "voice"),
    }
