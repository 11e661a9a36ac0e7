"""The statistics counters (`CallCounter`): what each change adds, how it is written, how it is read.

`services` builds a `Tally` for every transition (a call opened, answered, failed or ended, events
stored, usage added) and writes it with `Tally.save` inside the transition's transaction: one
upsert statement whatever the number of rows it touches, rows created on first use (no
get-or-create race), rows in a fixed order so concurrent transactions lock them in the same order
(PostgreSQL), amounts added by the database (`value = value + delta`), never read and written back.

`read` turns a scope's rows into the figures `GET /api/realtime/stats` shows; `rebuild` recounts
every row from the calls and events (after an import, or to check); `fold` is what both the
rebuild and `bench/seed_scale.py` use to turn per-call facts into rows.

The same tally also keeps the hourly counters (`CallBucket`) the dashboard reads: each call is
counted in the hour it was created in (UTC), so a transition adds to that hour's rows whatever the
time now, and a recount groups calls by their creation hour. Durations are also counted in fixed
buckets (`DURATION_EDGES`), from which the dashboard interpolates the p95 duration: exact to within
the width of the bucket it falls in, at the cost of ~20 rows an hour.

Turn latencies are counted the same way, per model: `latency/<bound>:<model>` rows count the turns
(in their `calls` amount) whose latency falls in the bucket (`quality.LATENCY_EDGES_MS`). A call's
turns are counted from its own histogram (`Call.metrics["latency_histogram"]`): storing new
metrics adds the difference from the stored ones (`latency_change`), so a turn counts once however
often the metrics are rewritten, and a recount sums the calls' histograms.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, Count, Q, Sum, Value, When
from django.db.models.functions import TruncHour

from .models import Call, CallBucket, CallCounter, CallEvent

ALL = "all"
AMOUNTS = ("calls", "events", "duration_calls", "duration_seconds", "input_tokens", "output_tokens", "cost_micros")
# Dimensions a call is counted under for as long as it exists (its status and end reason move).
FIXED = ("model", "voice", "source", "upstream_model")

Key = tuple[str, str]  # (dimension, value)

BUCKET_AMOUNTS = ("calls", "answered", "failed", "duration_calls", "duration_seconds", "input_tokens", "output_tokens", "cost_micros")
# Upper bounds (seconds) of the duration histogram's buckets; "inf" holds the rest. Closer where
# calls are common (a few minutes), so the p95 read from them is within a bucket's width.
DURATION_EDGES = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 420, 600, 900, 1200, 1800, 2700, 3600)
BucketKey = tuple[str, datetime, str]  # (dimension, hour, value)


def hour_of(moment: datetime) -> datetime:
    """The UTC hour a moment falls in: the bucket a call is counted in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def duration_bucket(seconds: float) -> str:
    for edge in DURATION_EDGES:
        if seconds <= edge:
            return str(edge)
    return "inf"


def latency_value(bucket: str, upstream_model: str) -> str:
    """The `latency` row's value for a bucket and model; the bound first (it holds no colon)."""
    return f"{bucket}:{upstream_model}"


def parse_latency_value(value: str) -> tuple[str, str]:
    """(bucket, model) from a `latency` row's value."""
    bucket, _, upstream_model = value.partition(":")
    return bucket, upstream_model


def latency_change(stored: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, int]:
    """Turns per latency bucket that `new` metrics add to (or, a stale rewrite, take from) the
    `stored` ones: what the hourly counters must add for the stored histogram to become the new."""
    before = (stored or {}).get("latency_histogram") or {}
    after = (new or {}).get("latency_histogram") or {}
    change = {bucket: int(after.get(bucket, 0)) - int(before.get(bucket, 0)) for bucket in {*before, *after}}
    return {bucket: n for bucket, n in change.items() if n}


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
    # The call's creation hour and model, for the hourly counters (none without them: events only).
    hour: datetime | None = None
    upstream_model: str = ""
    buckets: dict[Key, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))

    @classmethod
    def of(cls, call: Call) -> Tally:
        """A tally for a change to `call`: its scopes, and its hour and model for the hourly counters."""
        return cls(call.api_key_id, hour=hour_of(call.created_at), upstream_model=call.upstream_model)

    def per_hour(self, dimension: str, value: str, **amounts: float) -> Tally:
        if self.hour is not None:
            row = self.buckets[(dimension, value)]
            for name, amount in amounts.items():
                row[name] = row.get(name, 0) + amount
        return self

    def per_hour_and_model(self, **amounts: float) -> Tally:
        return self.per_hour("total", "", **amounts).per_hour("upstream_model", self.upstream_model, **amounts)

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
        return self.per_hour_and_model(calls=1)

    def moved(self, *, old: str, new: str, end_reason: str = "", duration: float | None = None) -> Tally:
        self.add("status", old, calls=-1)
        if duration is not None:
            self.add("status", new, calls=1, duration_calls=1, duration_seconds=duration)
        else:
            self.add("status", new, calls=1)
        if end_reason:
            self.add("end_reason", end_reason, calls=1)
            self.per_hour("end_reason", end_reason, calls=1)
        if new == Call.Status.ACTIVE and old == Call.Status.PENDING:
            self.per_hour_and_model(answered=1)
        elif new == Call.Status.FAILED:
            self.per_hour_and_model(failed=1)
        elif new == Call.Status.ENDED and duration is not None:
            self.per_hour_and_model(duration_calls=1, duration_seconds=duration)
            self.per_hour("duration", duration_bucket(duration), calls=1)
        return self

    def turns(self, change: dict[str, int]) -> Tally:
        """Turns added to (or taken from) the call's latency histogram, per bucket (`latency_change`)."""
        for bucket, n in change.items():
            self.per_hour("latency", latency_value(bucket, self.upstream_model), calls=n)
        return self

    def usage(self, *, upstream_model: str, input_tokens: int, output_tokens: int, cost_micros: int) -> Tally:
        for key in (("total", ""), ("upstream_model", upstream_model)):
            self.add(*key, input_tokens=input_tokens, output_tokens=output_tokens, cost_micros=cost_micros)
            self.per_hour(*key, input_tokens=input_tokens, output_tokens=output_tokens, cost_micros=cost_micros)
        return self

    def save(self) -> None:
        """Add this tally to every scope of the call, and to its hour, in one statement each (inside
        the caller's transaction)."""
        for upsert in self.upserts():
            upsert.run()

    def upserts(self) -> list[Upsert]:
        """The statements `save` runs (none for a table this tally adds nothing to)."""
        rows = {(scope, *key): amounts for scope in scopes(self.api_key_id) for key, amounts in self.rows.items() if amounts}
        found = [counter_rows(rows)] if rows else []
        if self.hour is not None:
            hour = self.hour
            buckets = {(dimension, hour, value): amounts for (dimension, value), amounts in self.buckets.items() if amounts}
            if buckets:
                found.append(bucket_rows(buckets))
        return found


@dataclass(frozen=True)
class Upsert:
    """Amounts to add to rows of one counter table, created if missing, the rows in key order (so
    concurrent transactions lock them in the same order)."""

    table: type[CallCounter] | type[CallBucket]
    keys: tuple[str, ...]
    amounts: tuple[str, ...]
    ordered: list[tuple[tuple[Any, ...], dict[str, float]]]

    def params(self, batch: list[tuple[tuple[Any, ...], dict[str, float]]]) -> list[Any]:
        params: list[Any] = []
        for key, row in batch:
            params += [*key, *(row.get(name, 0) for name in self.amounts)]
        return params

    def run(self) -> None:
        """One upsert per 500 rows."""
        for start in range(0, len(self.ordered), 500):
            batch = self.ordered[start : start + 500]
            sql = _upsert_sql(connection.vendor, self.table, self.keys, self.amounts, len(batch))
            with connection.cursor() as cursor:
                cursor.execute(sql, self.params(batch))

    def part(self, gate: str) -> tuple[str, list[Any]]:
        """The upsert as one statement of a PostgreSQL `WITH` (realtime.statements.transition):
        every row at once, written only if the query named `gate` yields a row.

        The rows are one JSON parameter (`jsonb_to_recordset`), not a placeholder per value: psycopg
        keeps the parsed form of a statement of at most 50 parameters, and parses a longer one at
        every execute (0.33 ms for a create's, three times per create and end)."""
        columns = (*self.keys, *self.amounts)
        rows = [dict(zip(columns, [*key, *(row.get(name, 0) for name in self.amounts)], strict=True)) for key, row in self.ordered]
        return _gated_upsert_sql(connection.vendor, self.table, self.keys, self.amounts, gate), [json.dumps(rows, default=_iso)]


def counter_rows(rows: dict[tuple[str, str, str], dict[str, float]]) -> Upsert:
    """Amounts to add to counter rows keyed by (scope, dimension, value)."""
    return Upsert(CallCounter, ("scope", "dimension", "value"), AMOUNTS, sorted(rows.items()))


def bucket_rows(rows: dict[BucketKey, dict[str, float]]) -> Upsert:
    """As `counter_rows`, for hourly rows keyed by (dimension, hour, value)."""
    adapt = connection.ops.adapt_datetimefield_value
    ordered = [((dimension, adapt(hour), value), amounts) for (dimension, hour, value), amounts in sorted(rows.items())]
    return Upsert(CallBucket, ("dimension", "hour", "value"), BUCKET_AMOUNTS, ordered)


def add_rows(rows: dict[tuple[str, str, str], dict[str, float]]) -> None:
    """Add amounts to counter rows keyed by (scope, dimension, value), creating missing rows: one
    upsert per 500 rows, in key order (concurrent transactions lock rows in the same order)."""
    counter_rows(rows).run()


def add_bucket_rows(rows: dict[BucketKey, dict[str, float]]) -> None:
    """As `add_rows`, for hourly rows keyed by (dimension, hour, value)."""
    bucket_rows(rows).run()


def _iso(value: datetime) -> str:
    return value.isoformat()


def _conflict(model: type[CallCounter] | type[CallBucket], keys: tuple[str, ...], amounts: tuple[str, ...]) -> str:
    table, quote = quote_name(model._meta.db_table), connection.ops.quote_name
    updates = ", ".join(f"{quote(name)} = {table}.{quote(name)} + excluded.{quote(name)}" for name in amounts)
    return f"ON CONFLICT ({', '.join(map(quote, keys))}) DO UPDATE SET {updates}"


@functools.cache
def _upsert_sql(
    vendor: str, model: type[CallCounter] | type[CallBucket], keys: tuple[str, ...], amounts: tuple[str, ...], rows: int
) -> str:
    """The upsert of `rows` rows, built once per shape (every transition runs one or two)."""
    quote = connection.ops.quote_name
    columns = (*keys, *amounts)
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return (
        f"INSERT INTO {quote_name(model._meta.db_table)} ({', '.join(map(quote, columns))}) "
        f"VALUES {', '.join([placeholders] * rows)} {_conflict(model, keys, amounts)}"
    )


@functools.cache
def _gated_upsert_sql(
    vendor: str, model: type[CallCounter] | type[CallBucket], keys: tuple[str, ...], amounts: tuple[str, ...], gate: str
) -> str:
    """PostgreSQL, inside a `WITH`: the upsert of rows given as a JSON array of objects, written
    only if the query `gate` yields a row (a conditional UPDATE that matched)."""
    quote = connection.ops.quote_name
    columns = (*keys, *amounts)
    names = ", ".join(map(quote, columns))
    # Types without their length (`varchar`, not `varchar(100)`): the INSERT's own conversion
    # then refuses a longer value, as it would from a VALUES list.
    types = ", ".join(f"{quote(name)} {str(model._meta.get_field(name).db_type(connection)).split('(')[0]}" for name in columns)
    return (
        f"INSERT INTO {quote_name(model._meta.db_table)} ({names}) SELECT {names} FROM jsonb_to_recordset(%s::jsonb) AS v ({types}) "
        f"WHERE EXISTS (SELECT FROM {gate}) {_conflict(model, keys, amounts)}"
    )


@functools.cache
def _counted_events_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    names = ", ".join(map(quote, ("scope", "dimension", "value", *AMOUNTS)))
    amounts = ", ".join("n.c" if name == "events" else "0" for name in AMOUNTS)
    return (
        f"INSERT INTO {quote_name(CallCounter._meta.db_table)} ({names}) SELECT s.scope, 'total', '', {amounts} "
        "FROM (SELECT count(*) AS c FROM e) AS n CROSS JOIN unnest(%s::text[]) WITH ORDINALITY AS s (scope, i) "
        f"WHERE n.c > 0 ORDER BY s.i {_conflict(CallCounter, ('scope', 'dimension', 'value'), AMOUNTS)}"
    )


def counted_events_part(api_key_id: int | None) -> tuple[str, list[Any]]:
    """PostgreSQL, inside a `WITH`: `Tally(api_key_id).events(n).save()` where n is how many rows
    the query `e` yields (the events a statement inserted), nothing if none."""
    return _counted_events_sql(connection.vendor), [sorted(scopes(api_key_id))]


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


@dataclass(frozen=True)
class HourGroup:
    """Calls created in the same hour and alike in every hourly dimension, with their sums."""

    hour: datetime
    upstream_model: str
    status: str
    end_reason: str
    duration: str  # the duration bucket of ended calls with a duration, else ""
    calls: int
    answered: int
    duration_seconds: float
    input_tokens: int
    output_tokens: int
    cost_micros: int


def fold_hours(groups: Iterable[HourGroup]) -> dict[BucketKey, dict[str, float]]:
    """Hourly rows, keyed by (dimension, hour, value), from groups of calls."""
    rows: dict[BucketKey, dict[str, float]] = defaultdict(lambda: dict.fromkeys(BUCKET_AMOUNTS, 0))
    for g in groups:
        amounts = {
            "calls": g.calls,
            "answered": g.answered,
            "failed": g.calls if g.status == Call.Status.FAILED else 0,
            "duration_calls": g.calls if g.duration else 0,
            "duration_seconds": g.duration_seconds if g.duration else 0.0,
            "input_tokens": g.input_tokens,
            "output_tokens": g.output_tokens,
            "cost_micros": g.cost_micros,
        }
        for key in (("total", g.hour, ""), ("upstream_model", g.hour, g.upstream_model)):
            row = rows[key]
            for name, amount in amounts.items():
                row[name] += amount
        if g.end_reason:
            rows[("end_reason", g.hour, g.end_reason)]["calls"] += g.calls
        if g.duration:
            rows[("duration", g.hour, g.duration)]["calls"] += g.calls
    return rows


def fold_turns(
    calls: Iterable[tuple[datetime, str, dict[str, int]]], rows: dict[BucketKey, dict[str, float]] | None = None
) -> dict[BucketKey, dict[str, float]]:
    """Hourly `latency` rows (added to `rows`) from each measured call's creation hour, upstream
    model and latency histogram."""
    out = rows if rows is not None else {}
    for hour, upstream_model, histogram in calls:
        for bucket, n in histogram.items():
            row = out.setdefault(("latency", hour, latency_value(bucket, upstream_model)), dict.fromkeys(BUCKET_AMOUNTS, 0))
            row["calls"] += n
    return out


def recount_hours() -> dict[BucketKey, dict[str, float]]:
    """Every hourly row as a full recount of the calls gives it (one pass, grouped in the database,
    and one over the measured calls' histograms, through the partial index on the slowest turn)."""
    ended = Q(status=Call.Status.ENDED, duration_seconds__isnull=False)
    bucket = Case(
        *(When(ended & Q(duration_seconds__lte=edge), then=Value(str(edge))) for edge in DURATION_EDGES),
        When(ended, then=Value("inf")),
        default=Value(""),
    )
    cube = (
        Call.objects.order_by()
        .annotate(hour=TruncHour("created_at", tzinfo=UTC), duration=bucket)
        .values("hour", "upstream_model", "status", "end_reason", "duration")
        .annotate(
            n=Count("id"),
            answered=Count("id", filter=Q(answered_at__isnull=False)),
            seconds=Sum("duration_seconds", filter=ended, default=0.0),
            input_tokens=Sum("input_tokens", default=0),
            output_tokens=Sum("output_tokens", default=0),
            cost=Sum("cost_usd"),
        )
    )
    rows = fold_hours(
        HourGroup(
            hour=row["hour"].astimezone(UTC),
            upstream_model=row["upstream_model"],
            status=row["status"],
            end_reason=row["end_reason"],
            duration=row["duration"],
            calls=row["n"],
            answered=row["answered"],
            duration_seconds=row["seconds"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cost_micros=micros(None if row["cost"] is None else Decimal(row["cost"]).quantize(Decimal("0.000001"))),
        )
        for row in cube
    )
    # A call has a slowest turn exactly when its histogram counts a turn (both come from one meter).
    measured = Call.objects.filter(latency_max_ms__isnull=False).order_by().values_list("created_at", "upstream_model", "metrics")
    return fold_turns(
        ((hour_of(created), model, (metrics or {}).get("latency_histogram") or {}) for created, model, metrics in measured.iterator()),
        rows,
    )


def stored_hours() -> dict[BucketKey, dict[str, float]]:
    """Every hourly row as stored, keyed as `recount_hours` keys them (tests, `--check`); rows all zero left out."""
    rows = {}
    for row in CallBucket.objects.values("dimension", "hour", "value", *BUCKET_AMOUNTS):
        amounts = {name: row[name] for name in BUCKET_AMOUNTS}
        if any(amounts.values()):
            rows[(row["dimension"], row["hour"].astimezone(UTC), row["value"])] = amounts
    return rows


def rebuild() -> int:
    """Replace every counter with a full recount; returns the number of rows written."""
    rows = recount()
    return _replace(
        CallCounter, [CallCounter(scope=scope, dimension=dim, value=value, **amounts) for (scope, dim, value), amounts in rows.items()]
    )


def rebuild_hours() -> int:
    """Replace every hourly counter with a full recount; returns the number of rows written."""
    rows = recount_hours()
    return _replace(
        CallBucket, [CallBucket(dimension=dim, hour=hour, value=value, **amounts) for (dim, hour, value), amounts in rows.items()]
    )


def _replace(model: type[CallCounter] | type[CallBucket], rows: list[Any]) -> int:
    with transaction.atomic():
        model.objects.all().delete()
        model.objects.bulk_create(rows, batch_size=500)
    return len(rows)
