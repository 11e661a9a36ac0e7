"""Reads: filtered call lists, a call's events, statistics. All aggregation happens in SQL."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.utils.translation import gettext as _

from . import counters
from .exceptions import CallNotFound, InvalidInput
from .models import Call, CallEvent

if TYPE_CHECKING:
    from .auth.principals import Principal

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


# Large documents no list or detail shows (the create response and the admin's call page do).
DOCUMENTS = ("sdp_offer", "sdp_answer", "session_requested", "session_upstream", "sip_headers")


def call_get(*, call_id: str, principal: Principal | None = None, documents: bool = True) -> Call:
    """One call by its public id; without its large documents unless `documents`."""
    calls = visible_calls(principal)
    try:
        return (calls if documents else calls.defer(*DOCUMENTS)).get(call_id=call_id)
    except Call.DoesNotExist:
        message = _("No call with id '%(id)s'.") % {"id": call_id[:100]}
        raise CallNotFound(message, details={"call_id": call_id[:100]}) from None


def call_list(
    *, status: str | None = None, source: str | None = None, principal: Principal | None = None, cursor: str | None = None
) -> QuerySet[Call]:
    """Calls newest first; after `cursor` (from `call_cursor`) if given: a deep page costs what
    the first one does, where an offset reads and skips every row before it."""
    calls = visible_calls(principal).defer(*DOCUMENTS)
    if status:
        calls = calls.filter(status=status)
    if source:
        calls = calls.filter(source=source)
    if cursor:
        created_at, pk = _decode_cursor(cursor)
        # Row order is (-created_at, -id): strictly older, or as old with a smaller id. The
        # created_at bound alone is an index range; the OR refines within it.
        calls = calls.filter(Q(created_at__lte=created_at) & (Q(created_at__lt=created_at) | Q(pk__lt=pk)))
    return calls


def call_count(*, status: str | None = None, source: str | None = None, principal: Principal | None = None) -> int:
    """How many calls `call_list` has in all (without a cursor), from the counters: exact, and
    not a scan of the history. The counters keep one dimension at a time: status and source
    together are counted from the (status) index instead."""
    if status and source:
        return call_list(status=status, source=source, principal=principal).count()
    figures = counters.read(stats_scope(principal))
    if source:
        return int(figures["calls_by_source"].get(source, 0))
    return int(figures[f"{status}_calls"] if status else figures["total_calls"])


def call_cursor(call: Call) -> str:
    """An opaque position after `call` in `call_list`'s order."""
    raw = f"{int(call.created_at.timestamp() * 1_000_000)}.{call.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, pk = (int(part) for part in raw.split("."))
        return datetime.fromtimestamp(micros / 1_000_000, tz=UTC), pk
    except (ValueError, UnicodeDecodeError, OverflowError, OSError):
        raise InvalidInput("cursor", _("is not a cursor this API returned.")) from None


def call_events(*, call: Call, event_type: str | None = None) -> QuerySet[CallEvent]:
    events = CallEvent.objects.filter(call=call).order_by("id")
    return events.filter(event_type=event_type) if event_type else events


def stats_scope(principal: Principal | None) -> str:
    """The counters `principal` reads: every call's, or its API key's own."""
    if principal is None or principal.sees_all:
        return counters.ALL
    assert principal.api_key is not None
    return counters.key_scope(principal.api_key.pk)


def stats(*, principal: Principal | None = None) -> dict[str, Any]:
    """Totals over the calls `principal` may see (a key's own; every call for the rest).

    Read from the counters `services` keeps in step with every change (`realtime.counters`): the
    same figures as `stats_recount`, at the cost of reading a few dozen rows.
    """
    return counters.read(stats_scope(principal))


def _counts_by(calls: QuerySet[Call], field: str) -> dict[str, int]:
    rows = calls.order_by(field).values_list(field).annotate(n=Count("id"))
    return {key: n for key, n in rows if key}


def stats_recount(*, principal: Principal | None = None) -> dict[str, Any]:
    """`stats`, recounted from every call and event: what the counters must always equal (tests,
    checks after an import). Scans the whole history: never on a request path."""
    calls = visible_calls(principal)
    events = CallEvent.objects.filter(call__in=calls) if principal is not None and not principal.sees_all else CallEvent.objects.all()
    ended = Q(status=Call.Status.ENDED)
    totals = calls.aggregate(
        total_calls=Count("id"),
        pending_calls=Count("id", filter=Q(status=Call.Status.PENDING)),
        active_calls=Count("id", filter=Q(status=Call.Status.ACTIVE)),
        ended_calls=Count("id", filter=ended),
        failed_calls=Count("id", filter=Q(status=Call.Status.FAILED)),
        avg_duration_seconds=Avg("duration_seconds", filter=ended),
        total_input_tokens=Sum("input_tokens", default=0),
        total_output_tokens=Sum("output_tokens", default=0),
        total_cost_usd=Sum("cost_usd", default=0),
        total_duration_seconds=Sum("duration_seconds", filter=ended, default=0.0),
    )
    totals["avg_duration_seconds"] = round(totals["avg_duration_seconds"] or 0.0, 1)
    totals["total_cost_usd"] = round(float(totals["total_cost_usd"]), 6)
    totals["total_duration_seconds"] = round(totals["total_duration_seconds"], 1)
    return {
        **totals,
        "total_events": events.count(),
        "calls_by_model": _counts_by(calls, "model"),
        "calls_by_voice": _counts_by(calls, "voice"),
        "usage_by_model": _usage_by_upstream_model(calls),
        "calls_by_source": _counts_by(calls, "source"),
        "calls_by_end_reason": _counts_by(calls, "end_reason"),
    }


def _usage_by_upstream_model(calls: QuerySet[Call]) -> dict[str, dict[str, Any]]:
    """Tokens and cost per model actually used upstream (what OpenAI bills), not per alias asked for."""
    rows = (
        calls.order_by("upstream_model")
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
