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

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.db import connection
from django.db.models import Field, Model

from .models import Call

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


def insert(obj: Model) -> None:
    """Save a new model instance (one INSERT; its primary key set from the database), as
    `obj.save()` would: every concrete field, defaults applied (`pre_save`). No signals are sent
    (none is connected to the models this is used for)."""
    meta = obj._meta
    fields = [f for f in meta.local_concrete_fields if not f.primary_key]
    params = [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
    sql = _insert_sql(connection.vendor, meta.db_table, tuple(f.column for f in fields))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        obj.pk = cursor.lastrowid if connection.vendor == "sqlite" else cursor.fetchone()[0]
    obj._state.adding = False
    obj._state.db = connection.alias


@functools.cache
def _update_sql(vendor: str, table: str, columns: tuple[str, ...], where: tuple[tuple[str, bool], ...]) -> str:
    quote = connection.ops.quote_name
    sets = ", ".join(f"{quote(column)} = %s" for column in columns)
    conditions = " AND ".join(f"{quote(column)} IS NULL" if is_null else f"{quote(column)} = %s" for column, is_null in where)
    return f"UPDATE {quote(table)} SET {sets} WHERE {quote('id')} = %s AND {conditions}"


def update_if(model: type[Model], pk: int, where: dict[str, Any], changes: dict[str, Any]) -> int:
    """`model.objects.filter(pk=pk, **where).update(**changes)` for plain values (a None in
    `where` means IS NULL); returns the number of rows changed (0 or 1)."""
    meta = model._meta
    fields = [cast(Field, meta.get_field(name)) for name in changes]
    conditions = [(cast(Field, meta.get_field(name)), value) for name, value in where.items()]
    params = [f.get_db_prep_save(value, connection) for f, value in zip(fields, changes.values(), strict=True)]
    params.append(pk)
    params += [f.get_db_prep_value(value, connection) for f, value in conditions if value is not None]
    shape = tuple((f.column, value is None) for f, value in conditions)
    sql = _update_sql(connection.vendor, meta.db_table, tuple(f.column for f in fields), shape)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


@functools.cache
def _live_calls_sql(vendor: str, total: bool, of_key: bool) -> str:
    quote = connection.ops.quote_name
    live = f"{quote('status')} IN ({', '.join(['%s'] * len(Call.ENDABLE))})"
    key = f"{quote('api_key_id')} = %s"
    if total and of_key:
        counts = f"COUNT(*), COUNT(*) FILTER (WHERE {key})"
    elif total:
        counts = "COUNT(*), 0"
    else:
        counts, live = "0, COUNT(*)", f"{live} AND {key}"
    return f"SELECT {counts} FROM {quote(Call._meta.db_table)} WHERE {live}"


def live_calls(*, api_key_id: int | None, total: bool) -> tuple[int, int]:
    """(live calls in all, live calls of the key `api_key_id`): pending or active, one read of the
    status index's live range; the first 0 unless `total`, the second 0 without a key."""
    if not total and api_key_id is None:
        return 0, 0
    sql = _live_calls_sql(connection.vendor, total, api_key_id is not None)
    statuses = [str(status) for status in Call.ENDABLE]
    if api_key_id is None:
        params: list[Any] = statuses
    elif total:
        params = [api_key_id, *statuses]
    else:
        params = [*statuses, api_key_id]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
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
