"""Reads: filtered call lists, a call's events, statistics. All aggregation happens in SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.utils.translation import gettext as _

from .exceptions import CallNotFound
from .models import Call, CallEvent

if TYPE_CHECKING:
    from .auth import Principal

# Upstream events a transcript is made of (the monitor stores them as they came).
TRANSCRIPT_EVENTS = ("conversation.item.done", "conversation.item.input_audio_transcription.completed")


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


def call_list(*, status: str | None = None, principal: Principal | None = None, source: str | None = None) -> QuerySet[Call]:
    calls = visible_calls(principal).defer("sdp_offer", "sdp_answer", "session_requested", "session_upstream", "sip_headers")
    calls = calls.filter(source=source) if source else calls
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
        total_input_tokens=Sum("input_tokens", default=0),
        total_output_tokens=Sum("output_tokens", default=0),
        total_cost_usd=Sum("cost_usd", default=0),
    )
    totals["avg_duration_seconds"] = round(totals["avg_duration_seconds"] or 0.0, 1)
    totals["total_cost_usd"] = round(float(totals["total_cost_usd"]), 6)
    return {
        **totals,
        "total_events": events.count(),
        "calls_by_model": _counts_by(calls, "model"),
        "calls_by_voice": _counts_by(calls, "voice"),
        "calls_by_source": _counts_by(calls, "source"),
        "usage_by_model": _usage_by_upstream_model(calls),
    }


def _usage_by_upstream_model(calls: QuerySet[Call]) -> dict[str, dict[str, Any]]:
    """Tokens and cost per model actually used upstream (what OpenAI bills), not per alias asked for."""
    rows = (
        calls.order_by()
        .values("upstream_model")
        .annotate(calls=Count("id"), input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"), cost_usd=Sum("cost_usd"))
    )
    return {
        row["upstream_model"]: {
            "calls": row["calls"],
            "input_tokens": row["input_tokens"] or 0,
            "output_tokens": row["output_tokens"] or 0,
            "cost_usd": round(float(row["cost_usd"] or 0), 6),
        }
        for row in rows
    }


def call_transcript(*, call: Call) -> list[dict[str, Any]]:
    """The conversation in order: who spoke, what was said (or transcribed), and when.

    Built from the recorded upstream events: each user or assistant `conversation.item.done` is
    an entry, in conversation order; a user audio item's text is its input transcription, which
    OpenAI sends separately (and possibly later).
    """
    events = CallEvent.objects.filter(call=call, actor=CallEvent.Actor.UPSTREAM, event_type__in=TRANSCRIPT_EVENTS).order_by("id")
    entries: list[dict[str, Any]] = []
    by_item: dict[str, dict[str, Any]] = {}
    # Transcriptions that arrived before their item (they run asynchronously upstream).
    early: dict[str, str] = {}
    for event in events.only("event_type", "data", "created_at"):
        if event.event_type == "conversation.item.done":
            item = event.data.get("item") or {}
            if item.get("type") != "message" or item.get("role") not in ("user", "assistant"):
                continue
            parts = [c.get("text") or c.get("transcript") or "" for c in item.get("content") or () if isinstance(c, dict)]
            entry = {
                "item_id": item.get("id", ""),
                "role": item["role"],
                "text": " ".join(p for p in parts if p),
                "timestamp": int(event.created_at.timestamp()),
            }
            entry["text"] = early.pop(entry["item_id"], entry["text"])
            by_item[entry["item_id"]] = entry
            entries.append(entry)
        elif (transcript := event.data.get("transcript")) and isinstance(transcript, str):
            item_id = event.data.get("item_id", "")
            if item_id in by_item:
                by_item[item_id]["text"] = transcript
            else:
                early[item_id] = transcript
    return entries
