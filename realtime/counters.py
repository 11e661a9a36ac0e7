"""The statistics counters (`CallCounter`): what each change adds, how it is written, how it is read.

`services` builds a `Tally` for every transition (a call opened, answered, failed or ended, events
stored, usage added) and writes it with `Tally.save` inside the transition's transaction: one
upsert statement whatever the number of rows it touches, rows created on first use (no
get-or-create race), rows in a fixed order so concurrent transactions lock them in the same order
(PostgreSQL), amounts added by the database (`value = value + delta`), never read and written back.

`read` turns a scope's rows into the figures `GET /api/realtime/stats` shows; `rebuild` recounts
every row from the calls and events (after an import, or to check); `fold` is what both the
rebuild and `bench/seed_scale.py` use to turn per-call facts into rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Q, Sum

from .models import Call, CallCounter, CallEvent

ALL = "all"
AMOUNTS = ("calls", "events", "duration_calls", "duration_seconds", "input_tokens", "output_tokens", "cost_micros")
# Dimensions a call is counted under for as long as it exists (its status and end reason move).
FIXED = ("model", "voice", "source", "upstream_model")

Key = tuple[str, str]  # (dimension, value)


def key_scope(api_key_id: int) -> str:
    return f"key:{api_key_id}"


def scopes(api_key_id: int | None) -> list[str]:
    """Every scope a call is counted in: all calls, and its key's own."""
    return [ALL] if api_key_id is None else [ALL, key_scope(api_key_id)]


def micros(cost: Decimal | None) -> int:
    """A call's cost (6 decimals) in millionths of a dollar; nothing for a call without a price."""
    return 0 if cost is None else int(cost.scaleb(6).to_integral_value())


@dataclass
class Tally:
    """What one change adds to the counters of one call's scopes."""

    api_key_id: int | None
    rows: dict[Key, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, dimension: str, value: str, **amounts: float) -> Tally:
        row = self.rows[(dimension, value)]
        for name, amount in amounts.items():
            row[name] = row.get(name, 0) + amount
        return self

    def events(self, n: int) -> Tally:
        return self.add("total", "", events=n)

    def opened(self, call: Call) -> Tally:
        self.add("total", "", calls=1).add("status", call.status, calls=1)
        for dimension in FIXED:
            self.add(dimension, getattr(call, dimension), calls=1)
        return self

    def moved(self, *, old: str, new: str, end_reason: str = "", duration: float | None = None) -> Tally:
        self.add("status", old, calls=-1)
        if duration is not None:
            self.add("status", new, calls=1, duration_calls=1, duration_seconds=duration)
        else:
            self.add("status", new, calls=1)
        if end_reason:
            self.add("end_reason", end_reason, calls=1)
        return self

    def usage(self, *, upstream_model: str, input_tokens: int, output_tokens: int, cost_micros: int) -> Tally:
        for key in (("total", ""), ("upstream_model", upstream_model)):
            self.add(*key, input_tokens=input_tokens, output_tokens=output_tokens, cost_micros=cost_micros)
        return self

    def save(self) -> None:
        """Add this tally to every scope of the call, in one statement (inside the caller's transaction)."""
        add_rows({(scope, *key): amounts for scope in scopes(self.api_key_id) for key, amounts in self.rows.items() if amounts})


def add_rows(rows: dict[tuple[str, str, str], dict[str, float]]) -> None:
    """Add amounts to counter rows keyed by (scope, dimension, value), creating missing rows: one
    upsert per 500 rows, in key order (concurrent transactions lock rows in the same order)."""
    table, quote = quote_name(CallCounter._meta.db_table), connection.ops.quote_name
    columns = ("scope", "dimension", "value", *AMOUNTS)
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    updates = ", ".join(f"{quote(name)} = {table}.{quote(name)} + excluded.{quote(name)}" for name in AMOUNTS)
    ordered = sorted(rows.items())
    for start in range(0, len(ordered), 500):
        batch = ordered[start : start + 500]
        params: list[Any] = []
        for key, amounts in batch:
            params += [*key, *(amounts.get(name, 0) for name in AMOUNTS)]
        sql = (
            f"INSERT INTO {table} ({', '.join(map(quote, columns))}) VALUES {', '.join([placeholders] * len(batch))} "
            f"ON CONFLICT ({quote('scope')}, {quote('dimension')}, {quote('value')}) DO UPDATE SET {updates}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def quote_name(name: str) -> str:
    return connection.ops.quote_name(name)


def read(scope: str) -> dict[str, Any]:
    """The statistics of one scope, from its counters (a few dozen rows, whatever the history)."""
    by: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in CallCounter.objects.filter(scope=scope).values("dimension", "value", *AMOUNTS):
        by[row["dimension"]][row["value"]] = row
    total = by["total"].get("", dict.fromkeys(AMOUNTS, 0))
    status = {value: row["calls"] for value, row in by["status"].items()}
    ended = by["status"].get(Call.Status.ENDED, {})
    duration_calls = ended.get("duration_calls", 0)

    def counts(dimension: str) -> dict[str, int]:
        return {value: row["calls"] for value, row in sorted(by[dimension].items()) if row["calls"]}

    return {
        "total_calls": total["calls"],
        "pending_calls": status.get(Call.Status.PENDING, 0),
        "active_calls": status.get(Call.Status.ACTIVE, 0),
        "ended_calls": status.get(Call.Status.ENDED, 0),
        "failed_calls": status.get(Call.Status.FAILED, 0),
        "avg_duration_seconds": round(ended["duration_seconds"] / duration_calls, 1) if duration_calls else 0.0,
        "total_input_tokens": total["input_tokens"],
        "total_output_tokens": total["output_tokens"],
        "total_cost_usd": round(total["cost_micros"] / 1_000_000, 6),
        "total_events": total["events"],
        "calls_by_model": counts("model"),
        "calls_by_voice": counts("voice"),
        "usage_by_model": {
            value: {
                "calls": row["calls"],
                "input_tokens": row["input_tokens"],
                "output_tokens": row["output_tokens"],
                "cost_usd": round(row["cost_micros"] / 1_000_000, 6),
            }
            for value, row in sorted(by["upstream_model"].items())
            if row["calls"]
        },
        "calls_by_source": counts("source"),
        "calls_by_end_reason": counts("end_reason"),
        "total_duration_seconds": round(ended.get("duration_seconds", 0.0), 1),
    }


def values(dimension: str) -> list[str]:
    """The values calls have taken in `dimension` (models, voices...), from the counters."""
    rows = CallCounter.objects.filter(scope=ALL, dimension=dimension, calls__gt=0).order_by("value")
    return list(rows.values_list("value", flat=True))


@dataclass(frozen=True)
class Group:
    """Calls alike in every counted dimension (one row of the recount's GROUP BY), with their sums."""

    api_key_id: int | None
    status: str
    end_reason: str
    model: str
    voice: str
    source: str
    upstream_model: str
    calls: int
    duration_calls: int
    duration_seconds: float
    input_tokens: int
    output_tokens: int
    cost_micros: int


def fold(groups: Iterable[Group], events_by_key: dict[int | None, int]) -> dict[tuple[str, str, str], dict[str, float]]:
    """Counter rows, keyed by (scope, dimension, value), from groups of calls and event counts per key."""
    rows: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: dict.fromkeys(AMOUNTS, 0))

    def add(scope: str, dimension: str, value: str, **amounts: float) -> None:
        row = rows[(scope, dimension, value)]
        for name, amount in amounts.items():
            row[name] += amount

    for g in groups:
        for scope in scopes(g.api_key_id):
            usage = {"input_tokens": g.input_tokens, "output_tokens": g.output_tokens, "cost_micros": g.cost_micros}
            add(scope, "total", "", calls=g.calls, **usage)
            add(scope, "upstream_model", g.upstream_model, calls=g.calls, **usage)
            add(scope, "status", g.status, calls=g.calls, duration_calls=g.duration_calls, duration_seconds=g.duration_seconds)
            for dimension in ("model", "voice", "source"):
                add(scope, dimension, getattr(g, dimension), calls=g.calls)
            if g.end_reason:
                add(scope, "end_reason", g.end_reason, calls=g.calls)
    for api_key_id, n in events_by_key.items():
        for scope in scopes(api_key_id):
            add(scope, "total", "", events=n)
    return rows


def recount() -> dict[tuple[str, str, str], dict[str, float]]:
    """Every counter row as a full recount of calls and events gives it (one pass over each table)."""
    dims = ("api_key_id", "status", "end_reason", "model", "voice", "source", "upstream_model")
    ended = Q(status=Call.Status.ENDED, duration_seconds__isnull=False)
    cube = (
        Call.objects.order_by()
        .values(*dims)
        .annotate(
            n=Count("id"),
            duration_calls=Count("id", filter=ended),
            duration=Sum("duration_seconds", filter=ended, default=0.0),
            input_tokens=Sum("input_tokens", default=0),
            output_tokens=Sum("output_tokens", default=0),
            cost=Sum("cost_usd"),
        )
    )
    groups = [
        Group(
            api_key_id=row["api_key_id"],
            status=row["status"],
            end_reason=row["end_reason"],
            model=row["model"],
            voice=row["voice"],
            source=row["source"],
            upstream_model=row["upstream_model"],
            calls=row["n"],
            duration_calls=row["duration_calls"],
            duration_seconds=row["duration"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cost_micros=micros(None if row["cost"] is None else Decimal(row["cost"]).quantize(Decimal("0.000001"))),
        )
        for row in cube
    ]
    events = CallEvent.objects.order_by().values("call__api_key_id").annotate(n=Count("id"))
    return fold(groups, {row["call__api_key_id"]: row["n"] for row in events})


def rebuild() -> int:
    """Replace every counter with a full recount; returns the number of rows written."""
    rows = recount()
    with transaction.atomic():
        CallCounter.objects.all().delete()
        CallCounter.objects.bulk_create(
            [CallCounter(scope=scope, dimension=dimension, value=value, **amounts) for (scope, dimension, value), amounts in rows.items()],
            batch_size=500,
        )
    return len(rows)
