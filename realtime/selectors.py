"""Reads: filtered call lists, a call's events, statistics. All aggregation happens in SQL."""

from __future__ import annotations

import base64
import functools
import operator
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from django.db import connection
from django.db.models import Avg, Count, F, Func, Q, QuerySet, Sum
from django.utils.translation import gettext as _

from . import counters, statements, words
from .exceptions import CallNotFound, InvalidInput
from .models import ApiKey, Call, CallEvent, CallWord

if TYPE_CHECKING:
    from django.db.models import Field

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


# Large documents no list, detail, transition or push shows (the create response and the admin's
# call page do).
DOCUMENTS = frozenset({"sdp_offer", "sdp_answer", "session_requested", "session_upstream", "sip_headers"})


def call_get(*, call_id: str, principal: Principal | None = None, documents: bool = True) -> Call:
    """One call by its public id; without its large documents unless `documents`."""
    # The rows visible_calls(principal) gives, by the unique id, in SQL written once (statements.get).
    where: dict[str, Any] = {"call_id": call_id}
    if principal is not None and not principal.sees_all:
        where["api_key"] = principal.api_key.pk if principal.api_key is not None else None
    call = statements.get(Call, where, defer=frozenset() if documents else DOCUMENTS)
    if call is None:
        message = _("No call with id '%(id)s'.") % {"id": call_id[:100]}
        raise CallNotFound(message, details={"call_id": call_id[:100]})
    return call


def read_deferred(call: Call) -> None:
    """Read the fields of `call` left out when it was loaded (`.only()`, `.defer()`), but its
    documents, in one query (none if none): what a transition and its push read is then there,
    however the call was loaded."""
    missing = call.get_deferred_fields() - DOCUMENTS
    if missing:
        call.refresh_from_db(fields=sorted(missing))


# `ordering` names and the column each sorts by.
ORDER_FIELDS = {"created_at": "created_at", "duration": "duration_seconds", "cost": "cost_usd", "latency": "latency_p95_ms"}
DEFAULT_ORDERING = "-created_at"
# Filters the statistics counters count calls by (one at a time): the list's count is read from them.
COUNTED = ("status", "source", "model", "voice", "end_reason")
# Beyond this many matches a filtered list's count stops (and says so): an exact count would read them all.
COUNT_CAP = 10_000
_ID = re.compile(r"^[A-Za-z0-9_-]+_[A-Za-z0-9_-]*$")
_PHONE = re.compile(r"^(?:(?:sip|tel):)?\+?[0-9][0-9 ().-]*$")


def prefix_lookups(start: str) -> dict[str, str]:
    """Lookups for values starting with `start`, answered from the column's index on every database.

    SQLite does not use an index for LIKE (case-insensitive by default), so it gets the same rows
    as a range; PostgreSQL uses the `varchar_pattern_ops` index for a LIKE prefix."""
    if connection.vendor == "postgresql":
        return {"startswith": start, "gte": start}
    # Everything starting with `start` sorts between it and its last character's successor.
    return {"gte": start, "lt": start[:-1] + chr(ord(start[-1]) + 1)}


def prefix(field: str, start: str) -> Q:
    """Rows whose `field` starts with `start` (see `prefix_lookups`)."""
    return Q(**{f"{field}__{lookup}": value for lookup, value in prefix_lookups(start).items()})


class Unindexed(Func):
    """A column's value as no index answers it (SQLite's unary `+`), so SQLite walks the order's
    index instead of the column's (see `ranged`). Elsewhere the column itself: PostgreSQL's
    planner chooses from its statistics."""

    template = "(%(expressions)s)"

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Through Func's own SQLite rendering: a decimal still compares as a number.
        return super().as_sqlite(compiler, connection, template="+%(expressions)s", **extra)


def unindexed(field: str) -> Unindexed:
    return Unindexed(F(field), output_field=cast("Field[Any, Any]", Call._meta.get_field(field)))


# A range of a column holding more calls than this is wide (see `ranged`).
DENSE = 2_000


def ranged(calls: QuerySet[Call], ranges: dict[str, dict[str, Any]], *, order: str | None) -> QuerySet[Call]:
    """`calls` whose value in one of `ranges`' columns meets all its lookups (`{"duration_seconds":
    {"gte": 300}}`: a range or a prefix of one column, or several such, any of which may match).

    Listed in the `order` of another column, a range has no good plan that SQLite can see: it
    keeps no distribution of a column's values, so it cannot tell a wide range (`min_duration=300`,
    `caller=+33`: a good part of the history) from a narrow one, and picks either the column's
    index (then every match is fetched and sorted to show one page) or the order's (then every
    call is read when nothing matches). So each range is measured first, from its column's index
    alone (at most DENSE + 1 entries): narrow ones give their calls by id (at most DENSE each to
    fetch and sort); otherwise each call is checked while walking the order's index, which meets
    a page of matches after about page × history / DENSE calls. Unordered (a count), or in the
    range's own column's order, the range is its index's. PostgreSQL's planner weighs ranges
    from its statistics."""
    conditions = [{f"{field}__{lookup}": value for lookup, value in lookups.items()} for field, lookups in ranges.items()]
    if order is None or order in ranges or connection.vendor != "sqlite":
        return calls.filter(functools.reduce(operator.or_, (Q(**condition) for condition in conditions)))
    found: list[int] = []
    for condition in conditions:
        ids = list(Call.objects.filter(**condition).order_by().values_list("pk", flat=True)[: DENSE + 1])
        if len(ids) > DENSE:
            break
        found += ids
    else:
        return calls.filter(pk__in=found)
    checks = (Q(**{f"walked_{field}__{lookup}": value for lookup, value in lookups.items()}) for field, lookups in ranges.items())
    return calls.alias(**{f"walked_{field}": unindexed(field) for field in ranges}).filter(functools.reduce(operator.or_, checks))


def call_search(calls: QuerySet[Call], q: str, *, order: str | None = None) -> QuerySet[Call]:
    """`q`: an id (call_… or an upstream id, whole or its beginning), a phone number (or its
    beginning), or words said in the call (every one of them). Each kind is one index
    (listed in the `order` of a column: see `ranged`)."""
    term = q.strip()
    if not term:
        return calls
    if _ID.match(term):
        return ranged(calls, {"call_id": prefix_lookups(term), "upstream_id": prefix_lookups(term)}, order=order)
    if _PHONE.match(term):
        # As stored: the number (the From header's user part), without the URI scheme or separators.
        number = re.sub(r"^(sip|tel):|[ ().-]", "", term)
        return ranged(calls, {"sip_caller": prefix_lookups(number)}, order=order)
    found = words.words(term)
    if not found:
        return calls.none()
    for word in found[:10]:
        calls = calls.filter(pk__in=CallWord.objects.filter(word=word).values("call_id"))
    return calls


def call_filter(
    calls: QuerySet[Call],
    *,
    status: str | None = None,
    source: str | None = None,
    model: str | None = None,
    voice: str | None = None,
    end_reason: str | None = None,
    api_key: int | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    min_duration: float | None = None,
    max_duration: float | None = None,
    min_cost: Decimal | None = None,
    min_latency: int | None = None,
    caller: str | None = None,
    q: str | None = None,
    order: str | None = None,
) -> QuerySet[Call]:
    """The calls matching every filter given (the list's and the export's query parameters).

    Equality filters each have an index beginning with their column then (created_at, id), so
    the default order reads a page straight from it; ranges have their column's index, used as
    `ranged` says when the calls are listed in the `order` of a column."""
    equal = {"status": status, "source": source, "model": model, "voice": voice, "end_reason": end_reason, "api_key_id": api_key}
    calls = calls.filter(**{name: value for name, value in equal.items() if value is not None})
    ranges: dict[str, dict[str, Any]] = {
        "created_at": {lookup: value for lookup, value in (("gte", created_after), ("lt", created_before)) if value is not None},
        "duration_seconds": {lookup: value for lookup, value in (("gte", min_duration), ("lte", max_duration)) if value is not None},
        "cost_usd": {} if min_cost is None else {"gte": min_cost},
        "latency_p95_ms": {} if min_latency is None else {"gte": min_latency},
        "sip_caller": prefix_lookups(caller) if caller else {},
    }
    for field, lookups in ranges.items():
        if lookups:
            calls = ranged(calls, {field: lookups}, order=order)
    if q:
        calls = call_search(calls, q, order=order)
    return calls


def api_key_id(prefix_: str) -> int:
    """The id of the API key `prefix_` names (0, which no key has, when none does)."""
    return ApiKey.objects.filter(prefix=prefix_).values_list("pk", flat=True).first() or 0


def call_list(
    *, principal: Principal | None = None, ordering: str = DEFAULT_ORDERING, cursor: str | None = None, **filters: Any
) -> QuerySet[Call]:
    """Calls matching `filters` in `ordering` (newest first by default), without their documents;
    after `cursor` (from `call_cursor`) if given: a deep page costs what the first one does, where
    an offset reads and skips every row before it."""
    calls = call_filter(visible_calls(principal).defer(*DOCUMENTS), **filters, order=ORDER_FIELDS[ordering.lstrip("-")])
    return call_order(calls, ordering, after=_decode_cursor(cursor, ordering) if cursor else None)


def call_order(calls: QuerySet[Call], ordering: str, *, after: tuple[Any, int] | None = None) -> QuerySet[Call]:
    """`calls` sorted by `ordering`, the id breaking ties; those after the position `after`
    (the sorted column's value and the id of the last call seen) if given.

    Sorting by duration, cost or latency keeps the calls that have that figure (a call still
    running has no duration, a call not yet measured no latency): each such order is then one
    index, the same on every database, where NULLs would sort first on one and last on another."""
    name, descending = ordering.lstrip("-"), ordering.startswith("-")
    field = ORDER_FIELDS[name]
    if name != "created_at":
        calls = calls.filter(**{f"{field}__isnull": False})
    if after is not None:
        value, pk = after
        # Strictly after (value, pk) in the order: the bound on the column alone is an index
        # range; the OR refines within it.
        if descending:
            calls = calls.filter(Q(**{f"{field}__lte": value}) & (Q(**{f"{field}__lt": value}) | Q(pk__lt=pk)))
        else:
            calls = calls.filter(Q(**{f"{field}__gte": value}) & (Q(**{f"{field}__gt": value}) | Q(pk__gt=pk)))
    sign = "-" if descending else ""
    return calls.order_by(f"{sign}{field}", f"{sign}id")


def call_count(*, principal: Principal | None = None, ordering: str = DEFAULT_ORDERING, **filters: Any) -> tuple[int, bool]:
    """How many calls `call_list` has in all (without a cursor), and whether that is exact.

    From the statistics counters when there is no filter or one they count (status, source,
    model, voice, end reason, within an API key's scope): exact, and not a scan of the history.
    Otherwise counted from the filters' indexes up to COUNT_CAP, which a larger set reports
    (then not exact)."""
    given = {name: value for name, value in filters.items() if value is not None and value != ""}
    scope = stats_scope(principal)
    key = given.pop("api_key", None)
    if key is not None and scope == counters.ALL:
        scope = counters.key_scope(key)
    elif key is not None and principal is not None and principal.api_key is not None and key != principal.api_key.pk:
        return 0, True
    if ordering.lstrip("-") == "created_at" and len(given) <= 1 and set(given) <= set(COUNTED):
        figures = counters.read(scope)
        if not given:
            return int(figures["total_calls"]), True
        ((name, value),) = given.items()
        if name == "status":
            return int(figures[f"{value}_calls"]), True
        return int(figures[f"calls_by_{name}"].get(value, 0)), True
    # Counted through the filters' own indexes (a wide range's too: no order to walk).
    calls = call_order(call_filter(visible_calls(principal), api_key=key, **given), ordering)
    counted = calls.order_by()[: COUNT_CAP + 1].count()
    return min(counted, COUNT_CAP), counted <= COUNT_CAP


def call_cursor(call: Call, ordering: str = DEFAULT_ORDERING) -> str:
    """An opaque position after `call` in `call_list`'s `ordering`."""
    field = ORDER_FIELDS[ordering.lstrip("-")]
    value = getattr(call, field)
    position = int(value.timestamp() * 1_000_000) if isinstance(value, datetime) else str(value)
    raw = f"{ordering}|{position}|{call.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, ordering: str) -> tuple[Any, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        made_for, position, pk = raw.split("|") if "|" in raw else (DEFAULT_ORDERING, *raw.split("."))
        name = made_for.lstrip("-")
        if made_for != ordering:
            raise InvalidInput("cursor", _("was returned for another ordering (%(ordering)s).") % {"ordering": made_for[:20]})
        value: Any
        if name == "created_at":
            value = datetime.fromtimestamp(int(position) / 1_000_000, tz=UTC)
        elif name == "cost":
            value = Decimal(position)
        elif name == "latency":
            value = int(position)
        else:
            value = float(position)
        return value, int(pk)
    except (ValueError, UnicodeDecodeError, OverflowError, OSError, ArithmeticError, KeyError):
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
