"""Reads: filtered call lists, a call's events, statistics. All aggregation happens in SQL."""

from __future__ import annotations

from typing import Any

from django.db.models import Avg, Count, Q, QuerySet
from django.utils.translation import gettext as _

from .exceptions import CallNotFound
from .models import Call, CallEvent


def call_get(*, call_id: str) -> Call:
    try:
        return Call.objects.get(call_id=call_id)
    except Call.DoesNotExist:
        message = _("No call with id '%(id)s'.") % {"id": call_id[:100]}
        raise CallNotFound(message, details={"call_id": call_id[:100]}) from None


def call_list(*, status: str | None = None) -> QuerySet[Call]:
    calls = Call.objects.defer("sdp_offer", "sdp_answer", "session_requested", "session_upstream")
    return calls.filter(status=status) if status else calls


def call_events(*, call: Call, event_type: str | None = None) -> QuerySet[CallEvent]:
    events = CallEvent.objects.filter(call=call).order_by("id")
    return events.filter(event_type=event_type) if event_type else events


def _counts_by(field: str) -> dict[str, int]:
    rows = Call.objects.order_by().values_list(field).annotate(n=Count("id"))
    return {key: n for key, n in rows}


def stats() -> dict[str, Any]:
    totals = Call.objects.aggregate(
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
        "total_events": CallEvent.objects.count(),
        "calls_by_model": _counts_by("model"),
        "calls_by_voice": _counts_by("voice"),
    }
