"""The two statements every call transition runs, written without the ORM's per-statement work.

Building a statement through the ORM (resolving lookups, joins, ordering, compiling) cost, on the
call-setup path, several times what running it costs, for every INSERT of a call or an event and
every conditional UPDATE of a transition (docs/benchmarks.md, "A million calls"). These build
the SQL once per table and column set and prepare each value with its own field
(`get_db_prep_save`: JSON, datetimes, decimals, as each database wants them), as the ORM does,
so the rows written are the same. Expressions, several rows, anything else: the ORM.

`get` reads one row by a unique column, converted as the ORM converts it (its fields' and the
database's converters) into a model instance (`from_db`, deferred fields left deferred): a call's
detail and the DELETE's lookup (0.79 ms per read through the ORM, 0.14 ms so), and an API key by
its hash on every API request.

`live_calls` is the count a create's capacity check reads, inside the create's transaction: the
ORM's aggregate cost 0.6 ms to build and run at every create (the production default has a
limit), this 0.1 ms.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from django.db import connection, transaction
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import Field, Model

from .counters import Upsert
from .models import Call, CallEvent
from .webhooks import outbox
from .webhooks.outbox import Subscriber

M = TypeVar("M", bound=Model)


@functools.cache
def _insert_sql(vendor: str, table: str, columns: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    values = ", ".join(["%s"] * len(columns))
    sql = f"INSERT INTO {quote(table)} ({', '.join(map(quote, columns))}) VALUES ({values})"
    # SQLite: the new id from the connection (`lastrowid`), not RETURNING: with RETURNING, SQLite
    # spilled the INSERT of a call (a row of several KB: the offer) to a temporary file, created,
    # written (~24 page writes) and deleted at every create; without, none (strace, 100 creates).
    return sql if vendor == "sqlite" else f"{sql} RETURNING {quote('id')}"


def _values(obj: Model, fields: list[Field]) -> list[Any]:
    """The values of a new row's fields, as `obj.save()` prepares them (defaults applied)."""
    return [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]


def _inserted(obj: Model, pk: int) -> None:
    obj.pk = pk
    obj._state.adding = False
    obj._state.db = connection.alias


def insert(obj: Model) -> None:
    """Save a new model instance (one INSERT; its primary key set from the database), as
    `obj.save()` would: every concrete field, defaults applied (`pre_save`). No signals are sent
    (none is connected to the models this is used for)."""
    meta = obj._meta
    fields = [f for f in meta.local_concrete_fields if not f.primary_key]
    sql = _insert_sql(connection.vendor, meta.db_table, tuple(f.column for f in fields))
    with connection.cursor() as cursor:
        cursor.execute(sql, _values(obj, fields))
        _inserted(obj, cursor.lastrowid if connection.vendor == "sqlite" else cursor.fetchone()[0])


@functools.cache
def _update_sql(vendor: str, table: str, columns: tuple[str, ...], where: tuple[tuple[str, bool], ...]) -> str:
    quote = connection.ops.quote_name
    sets = ", ".join(f"{quote(column)} = %s" for column in columns)
    conditions = " AND ".join(f"{quote(column)} IS NULL" if is_null else f"{quote(column)} = %s" for column, is_null in where)
    if vendor == "postgresql":
        # The row is found by its id alone, the conditions checked on it. Left bare, PostgreSQL may
        # find it through an index of the conditions instead (a few pending calls, it estimates),
        # and then reads every entry of that index left dead since the last vacuum: 1.6-3.6 ms
        # against 0.02 ms by id, 17,000 creates after a vacuum on a 300,000-call history. A CASE
        # is no index's condition.
        conditions = f"CASE WHEN {conditions} THEN TRUE END"
    return f"UPDATE {quote(table)} SET {sets} WHERE {quote('id')} = %s AND {conditions}"


def _update(model: type[Model], pk: int, where: dict[str, Any], changes: dict[str, Any]) -> tuple[str, list[Any]]:
    meta = model._meta
    fields = [cast(Field, meta.get_field(name)) for name in changes]
    conditions = [(cast(Field, meta.get_field(name)), value) for name, value in where.items()]
    params = [f.get_db_prep_save(value, connection) for f, value in zip(fields, changes.values(), strict=True)]
    params.append(pk)
    params += [f.get_db_prep_value(value, connection) for f, value in conditions if value is not None]
    shape = tuple((f.column, value is None) for f, value in conditions)
    return _update_sql(connection.vendor, meta.db_table, tuple(f.column for f in fields), shape), params


def update_if(model: type[Model], pk: int, where: dict[str, Any], changes: dict[str, Any]) -> int:
    """`model.objects.filter(pk=pk, **where).update(**changes)` for plain values (a None in
    `where` means IS NULL); returns the number of rows changed (0 or 1)."""
    sql, params = _update(model, pk, where, changes)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


_alone = threading.local()


@contextlib.contextmanager
def atomic() -> Iterator[None]:
    """`transaction.atomic()` around one change of a call (`realtime.services`), except on
    PostgreSQL outside any transaction: there the transaction is opened only when needed. A
    `transition` whose statement is the whole change commits on its own (an autocommit statement
    is a transaction: its event, counters and change together or not at all), without the BEGIN
    and COMMIT round trips; anything else in the block (another statement: call `begin` first; the
    deliveries of a webhook endpoint that wants the event) runs in a transaction opened then, and
    committed when the block ends."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        with transaction.atomic():
            yield
        return
    with contextlib.ExitStack() as stack:
        outer, _alone.stack = getattr(_alone, "stack", None), stack
        try:
            yield
        finally:
            _alone.stack = outer


def begin() -> None:
    """Inside `atomic`: open its transaction now, before statements that must share it."""
    stack = getattr(_alone, "stack", None)
    if stack is not None:
        _alone.stack = None
        stack.enter_context(transaction.atomic())


def transition(
    event: CallEvent,
    *,
    upserts: list[Upsert],
    endpoints: bool,
    new: bool = False,
    where: dict[str, Any] | None = None,
    changes: dict[str, Any] | None = None,
) -> list[Subscriber] | None:
    """Write a change of `event.call` with its event: insert the call (`new`), or apply `changes` to
    it if it still matches `where` (plain values, as `update_if`), or neither; then the event (its
    primary key set), the counters' `upserts`, and read the webhook endpoints that may hear about
    the call when `endpoints` (outbox.in_scope). Returns those endpoints ([] when not read), or
    None when the call no longer matched `where`: then nothing was written.

    On PostgreSQL, one statement (a `WITH` whose parts are the statements SQLite runs one by one,
    each written only if the change was): a transition's statements were each a round trip, which
    on a create's path cost more than the database's work itself (docs/benchmarks.md). Outside a
    transaction (`atomic`), the statement writes nothing if an endpoint wants the event (its
    deliveries must be written in the same transaction): the transaction is then opened and the
    statement run again.
    """
    call = event.call
    if connection.vendor != "postgresql":
        if new:
            insert(call)
            event.call_id = call.pk
        elif changes is not None and not update_if(Call, call.pk, where or {}, changes):
            return None
        insert(event)
        for upsert in upserts:
            upsert.run()
        return outbox.in_scope(call) if endpoints else []
    alone = getattr(_alone, "stack", None) is not None and not connection.in_atomic_block
    wanted = outbox.wanted(event.event_type) if alone and endpoints else ()
    read = endpoints and not alone
    rows = _transition(event, upserts, new=new, where=where, changes=changes, wanted=wanted, read=read)
    if wanted and rows[0][2]:
        begin()
        read = True
        rows = _transition(event, upserts, new=new, where=where, changes=changes, wanted=(), read=read)
    if not rows or rows[0][0] is None:
        return None
    if new:
        _inserted(call, rows[0][0])
    event.call_id = rows[0][0]
    _inserted(event, rows[0][1])
    return outbox.subscribers([(pk, events) for _, _, pk, events in rows if pk is not None]) if read else []


def _transition(
    event: CallEvent,
    upserts: list[Upsert],
    *,
    new: bool,
    where: dict[str, Any] | None,
    changes: dict[str, Any] | None,
    wanted: tuple[str, ...],
    read: bool,
) -> list[tuple[Any, ...]]:
    call = event.call
    params: list[Any] = []
    if wanted:
        guard, params = outbox.wanted_query(call.api_key_id, wanted)
    else:
        guard = ""
    if new:
        # Columns left NULL are left out (no column has a database default): fewer parameters
        # (see counters.Upsert.part), in a few shapes.
        given = [
            (f, value) for f in Call._meta.local_concrete_fields if not f.primary_key for value in _values(call, [f]) if value is not None
        ]
        head: tuple[Any, ...] = ("insert", tuple(f for f, _ in given))
        params += [value for _, value in given]
    elif changes is not None:
        update, update_params = _update(Call, call.pk, where or {}, changes)
        head = ("update", update)
        params += update_params
    else:
        head = ("call",)
        params.append(call.pk)
    event_fields = [f for f in CallEvent._meta.local_concrete_fields if not f.primary_key and f.column != "call_id"]
    params += _values(event, event_fields)
    parts = []
    for upsert in upserts:
        part, part_params = upsert.part("t")
        parts.append(part)
        params += part_params
    reads, read_params = outbox.in_scope_query(call.api_key_id) if read else ("", [])
    params += read_params
    sql = _transition_sql(connection.vendor, head, tuple(event_fields), tuple(parts), reads, guard)
    with _prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _prepared_cursor() -> Any:
    """A cursor whose statements PostgreSQL prepares: bound on the server and prepared on the
    connection at their first run, so that PostgreSQL parses each shape of a transition's `WITH`
    statement once per connection, and plans it a few times, not at every run, and no 4 KB offer
    is quoted into its text. PostgreSQL's CPU for a call's four transitions went from 5.0–5.3 to
    2.5–2.9 ms, and each of a create's two trips took 0.5–0.9 ms less (docs/benchmarks.md, "A
    transition's statement, prepared"). The statement has a cast on every parameter, so it means
    the same bound either way. Django's wrapper is around it, as around any cursor: its statement
    log and execute wrappers see it.

    Only these statements: Django binds on the client by default (`server_side_binding`), and its
    own queries stay that way; prepared statements need a session of their own on the server
    (Django's pool, a direct connection, or PgBouncer 1.21 and later with `max_prepared_statements`).
    """
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns psycopg's preparing off (OPTIONS `prepare_threshold`), which also refuses
        # `prepare=True`. Never by count: only the statements that ask for it are prepared (no
        # other cursor binds on the server, and only those bound there can be).
        raw.prepare_threshold = _ONLY_WHEN_ASKED
    cursor = _prepared_class()(raw)
    # What `connection.cursor()` wraps a cursor in; under DEBUG, one that logs the statement
    # (Django reads it from psycopg, which keeps none for a prepared statement).
    return _PreparedDebug(cursor, connection) if connection.queries_logged else connection.make_cursor(cursor)


class _PreparedDebug(CursorDebugWrapper):
    def execute(self, sql: Any, params: Any = None) -> Any:
        # Logged with its placeholders (`%s`), its parameters apart: quoting them into its text,
        # a 4 KB offer among them, cost 5 % of a web process's CPU in a churn under DEBUG
        # (`make run-scaled`), for a log nobody reads there.
        with self.debug_sql(sql, params):
            return CursorWrapper.execute(self, sql, params)


_ONLY_WHEN_ASKED = 2**62


@functools.cache
def _prepared_class() -> type[Any]:
    import psycopg

    class Prepared(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None) -> Any:
            return super().execute(query, params, prepare=True if prepare is None else prepare, binary=binary)

    return Prepared


@functools.cache
def _transition_sql(
    vendor: str, head: tuple[Any, ...], event_fields: tuple[Field, ...], upserts: tuple[str, ...], reads: str, guard: str
) -> str:
    """`transition`'s statement on PostgreSQL, built once per shape: `t` the call changed (its id;
    no row if the UPDATE matched none), `e` its event, the upserts gated on `t`, `w` the endpoints
    read; or, with a `guard` (the endpoints that want the event), `g`, and nothing written if it
    finds one."""
    quote = connection.ops.quote_name
    unless = " WHERE NOT EXISTS (SELECT FROM g)" if guard else ""
    if head[0] == "insert":
        names = ", ".join(quote(cast(str, f.column)) for f in head[1])
        first = f"INSERT INTO {quote(Call._meta.db_table)} ({names}) SELECT {_casts(head[1])}{unless} RETURNING {quote('id')}"
    elif head[0] == "update":
        first = f"{head[1]}{' AND NOT EXISTS (SELECT FROM g)' if guard else ''} RETURNING {quote('id')}"
    else:
        first = f"SELECT CAST(%s AS bigint) AS {quote('id')}{unless}"
    columns = ", ".join(quote(cast(str, f.column)) for f in event_fields)
    parts = [
        *([f"g AS ({guard})"] if guard else []),
        f"t AS ({first})",
        f"e AS (INSERT INTO {quote(CallEvent._meta.db_table)} ({quote('call_id')}, {columns}) "
        f"SELECT t.{quote('id')}, {_casts(event_fields)} FROM t RETURNING {quote('id')})",
        *(f"u{i} AS ({upsert})" for i, upsert in enumerate(upserts)),
    ]
    if guard:
        # One row whatever happened: whether an endpoint stopped the statement tells it from a
        # conditional UPDATE that matched nothing.
        return f"WITH {', '.join(parts)} SELECT (SELECT {quote('id')} FROM t), (SELECT {quote('id')} FROM e), EXISTS (SELECT FROM g)"
    selected = f"SELECT t.{quote('id')}, e.{quote('id')}"
    if not reads:
        return f"WITH {', '.join(parts)} {selected} FROM t CROSS JOIN e"
    parts.append(f"w AS ({reads})")
    return f"WITH {', '.join(parts)} {selected}, w.{quote('id')}, w.{quote('events')} FROM t CROSS JOIN e LEFT JOIN w ON TRUE"


def _casts(fields: tuple[Field, ...] | list[Field]) -> str:
    """A placeholder per field, cast to its column's type (a SELECT list has no column to take it
    from), without its length: an explicit cast to `varchar(80)` would cut a longer value, where
    the INSERT's own conversion refuses it, as the ORM's INSERT does."""
    return ", ".join(f"%s::{cast(str, f.db_type(connection)).split('(')[0]}" for f in fields)


def insert_events_once(events: list[CallEvent], *, counted: tuple[str, list[Any]] | None = None) -> list[CallEvent]:
    """PostgreSQL: insert new events of one call, in one statement, but those whose upstream event
    id the call already has (`event_upstream_once`: a takeover's two monitors both receive them);
    returns those inserted, in order, their primary keys set. Reading the stored ids first, as on
    SQLite, was a round trip of its own in every batch a monitor stores. `events` carry distinct
    upstream ids (or none). `counted` (`counters.counted_events_part`): the counters' upsert of
    the events inserted, in the same statement (`e` names them)."""
    meta = CallEvent._meta
    fields = [f for f in meta.local_concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    row = f"({', '.join(['%s'] * len(fields))})"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(cast(str, f.column)) for f in fields)}) "
        f"VALUES {', '.join([row] * len(events))} ON CONFLICT DO NOTHING RETURNING {quote('id')}, {quote('upstream_event_id')}"
    )
    params = [value for event in events for value in _values(event, fields)]
    if counted is not None:
        sql = f"WITH e AS ({sql}), u AS ({counted[0]}) SELECT {quote('id')}, {quote('upstream_event_id')} FROM e"
        params += counted[1]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = cursor.fetchall()
    kept = {upstream_id for _, upstream_id in returned}
    inserted = [event for event in events if not event.upstream_event_id or event.upstream_event_id in kept]
    # Ids are drawn in the rows' order, skipped rows included: the inserted rows' ids, sorted.
    for event, pk in zip(inserted, sorted(pk for pk, _ in returned), strict=True):
        _inserted(event, pk)
    return inserted


@functools.cache
def _same_counts_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    m = quote("metrics")
    if vendor == "postgresql":
        # jsonb: numbers equal by value, objects whatever their keys' order.
        same = (
            f"COALESCE({m} -> 'turns', '0') = %s::jsonb AND COALESCE({m} -> 'interruptions', '0') = %s::jsonb "
            f"AND COALESCE({m} -> 'latency_histogram', '{{}}') = %s::jsonb"
        )
    else:
        # SQLite: numbers by value; objects as minified text, so the same buckets in another order
        # differ (then the caller takes its full path, which is right either way).
        same = (
            f"COALESCE(json_extract({m}, '$.turns'), 0) = %s AND COALESCE(json_extract({m}, '$.interruptions'), 0) = %s "
            f"AND json(COALESCE(json_extract({m}, '$.latency_histogram'), '{{}}')) = json(%s)"
        )
    sets = ", ".join(f"{quote(column)} = %s" for column in ("metrics", "latency_p95_ms", "latency_max_ms"))
    return f"UPDATE {quote(Call._meta.db_table)} SET {sets} WHERE {quote('id')} = %s AND {same}"


def update_metrics_if_same_counts(pk: int, metrics: dict[str, Any], latency_p95_ms: int | None, latency_max_ms: int | None) -> bool:
    """Store a call's quality figures (its `metrics` and their two indexed columns) if the stored
    ones count the same turns, interruptions and turns per latency bucket: then neither the hourly
    counters nor the list feed have anything to learn from the write (`services.call_record_metrics`).
    One statement, atomic on its own; False, and nothing written, otherwise."""
    field = Call._meta.get_field("metrics")
    counts = [metrics.get("turns", 0), metrics.get("interruptions", 0), metrics.get("latency_histogram") or {}]
    if connection.vendor == "postgresql":
        # Each compared as JSON (jsonb), the histogram included.
        compared = [field.get_db_prep_save(value, connection) for value in counts]
    else:
        compared = [*counts[:2], field.get_db_prep_save(counts[2], connection)]
    params = [field.get_db_prep_save(metrics, connection), latency_p95_ms, latency_max_ms, pk, *compared]
    with connection.cursor() as cursor:
        cursor.execute(_same_counts_sql(connection.vendor), params)
        return cursor.rowcount == 1


@functools.cache
def _live_calls_sql(vendor: str, total: bool, of_key: bool, lock: bool) -> str:
    quote = connection.ops.quote_name
    live = f"{quote('status')} IN ({', '.join(['%s'] * len(Call.ENDABLE))})"
    key = f"{quote('api_key_id')} = %s"
    if total and of_key:
        counts = f"COUNT(*), COUNT(*) FILTER (WHERE {key})"
    elif total:
        counts = "COUNT(*), 0"
    else:
        counts, live = "0, COUNT(*)", f"{live} AND {key}"
    sql = f"SELECT {counts} FROM {quote(Call._meta.db_table)} WHERE {live}"
    # Two statements in one round trip (the parameters bound on this side, Django's default with
    # psycopg 3): the count has a snapshot of its own, taken once the lock is held, so it sees
    # every create committed while this one waited for the lock.
    return f"SELECT pg_advisory_xact_lock(%s); {sql}" if lock else sql


def live_calls(*, api_key_id: int | None, total: bool, lock: int | None = None) -> tuple[int, int]:
    """(live calls in all, live calls of the key `api_key_id`): pending or active, one read of the
    status index's live range; the first 0 unless `total`, the second 0 without a key.

    `lock`: first take that PostgreSQL advisory lock for the rest of the transaction (it
    serialises the counts and inserts of concurrent creates), in the same round trip."""
    if not total and api_key_id is None:
        return 0, 0
    together = lock is not None and not connection.settings_dict["OPTIONS"].get("server_side_binding")
    if lock is not None and not together:
        # Server-side binding takes one statement per execute.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock])
    sql = _live_calls_sql(connection.vendor, total, api_key_id is not None, together)
    statuses = [str(status) for status in Call.ENDABLE]
    if api_key_id is None:
        params: list[Any] = statuses
    elif total:
        params = [api_key_id, *statuses]
    else:
        params = [*statuses, api_key_id]
    with connection.cursor() as cursor:
        cursor.execute(sql, [lock, *params] if together else params)
        if together:
            cursor.nextset()
        counts = cursor.fetchone()
    return int(counts[0]), int(counts[1])


@functools.cache
def _get_plan(
    vendor: str, model: type[Model], deferred: frozenset[str], where: tuple[tuple[str, bool], ...]
) -> tuple[str, list[str], list[tuple[Any, list[Callable[..., Any]]]]]:
    meta = model._meta
    fields = [f for f in meta.concrete_fields if f.attname not in deferred]
    quote = connection.ops.quote_name
    conditions = " AND ".join(f"{quote(column)} IS NULL" if is_null else f"{quote(column)} = %s" for column, is_null in where)
    sql = f"SELECT {', '.join(quote(cast(str, f.column)) for f in fields)} FROM {quote(meta.db_table)} WHERE {conditions}"
    # What the ORM's compiler applies to each column it reads (`get_converters`), with the column.
    converters = [(f.cached_col, connection.ops.get_db_converters(f.cached_col) + f.get_db_converters(connection)) for f in fields]
    return sql, [f.attname for f in fields], converters


def get(model: type[M], where: dict[str, Any], *, defer: frozenset[str] = frozenset()) -> M | None:
    """The one row of `model` matching `where` (columns by name, a unique one among them; a None
    means IS NULL), without the fields in `defer`; None if there is none."""
    meta = model._meta
    conditions = [(cast(Field, meta.get_field(name)), value) for name, value in where.items()]
    shape = tuple((f.column, value is None) for f, value in conditions)
    sql, names, converters = _get_plan(connection.vendor, model, defer, shape)
    params = [f.get_db_prep_value(value, connection) for f, value in conditions if value is not None]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = []
    for value, (column, field_converters) in zip(row, converters, strict=True):
        for convert in field_converters:
            value = convert(value, column, connection)
        values.append(value)
    return model.from_db(connection.alias, names, values)
