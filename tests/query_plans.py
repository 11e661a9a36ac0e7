"""Query plan checks: every query a code path runs on the tables that grow with history must be
answered from an index, so its cost does not grow with the history.

`capture()` records the queries (SQL and parameters, as the database receives them: a partial
index may be usable with a literal and not with a parameter) that a block runs; `problems()`
asks the database for each one's plan and names those that read a whole table, or a whole index
without a LIMIT to stop them, or (SQLite) a range of an index then sorted in another order (a
LIMIT stops nothing there: every match is read to be sorted); `sorts()` names those that sort
what they read at all. SQLite's EXPLAIN QUERY PLAN, and PostgreSQL's EXPLAIN with sequential
scans priced out (a test database is small enough that PostgreSQL would rightly scan it: what
matters is whether an index *can* answer).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction

# The tables whose size is the history's (calls, their events, webhook deliveries, the hourly
# counters); the rest stay small.
GROWING = ("realtime_call", "realtime_callevent", "realtime_webhookmessage", "realtime_callbucket")


@contextmanager
def capture() -> Iterator[list[tuple[str, Any]]]:
    queries: list[tuple[str, Any]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        queries.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield queries
    # Several statements sent in one execute (PostgreSQL, parameters bound on this side) are
    # checked one by one: EXPLAIN takes one statement.
    queries[:] = [part for sql, params in queries for part in _split(sql, params)]


def _split(sql: str, params: Any) -> list[tuple[str, Any]]:
    """The statements of one execute with their parameters (none of ours quotes a `;` or a `%s`)."""
    parts = [part for part in re.split(r";\s+", sql.strip()) if part]
    if len(parts) == 1 or not isinstance(params, list | tuple):
        return [(sql, params)]
    found, start = [], 0
    for part in parts:
        n = part.count("%s")
        found.append((part, list(params[start : start + n])))
        start += n
    return found


def _reads_growing(sql: str) -> bool:
    lowered = sql.lstrip().lower()
    if not lowered.startswith(("select", "update", "delete", "with")):
        return False  # INSERTs, transaction control, PRAGMAs: no plan to check (a WITH may hold reads)
    return any(re.search(rf'"{table}"', sql) for table in GROWING)


def _bounded(sql: str) -> bool:
    """A LIMIT stops a scan early (when matches are dense: a sparse filter must have its own index,
    which is the author's call: see the admin's unconfirmed-hangup filter); so does a primary key."""
    return bool(re.search(r"\bLIMIT\b", sql, re.IGNORECASE) or re.search(r'"id" = %s', sql))


def _sqlite(sql: str, params: Any, *, counted_ranges: bool = False) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        details = [row[-1] for row in cursor.fetchall()]
    problems = []
    # A sort the plan adds reads every row its search yields before the LIMIT applies.
    sorts = "USE TEMP B-TREE FOR ORDER BY" in details
    for detail in details:
        match = re.match(r"SCAN (\w+)( USING (COVERING )?INDEX (\w+))?", detail)
        if match and match.group(1) in GROWING and not _bounded(sql):
            problems.append(f"reads all of {match.group(1)}: {detail}")
        ranged = re.match(r"SEARCH (\w+) USING (?:COVERING )?INDEX \w+ \((\w+)[<>]", detail)
        if ranged and ranged.group(1) in GROWING and sorts and not counted_ranges:
            # A range first (no equality before it): as wide as the values asked, so a page of
            # it sorted in another order reads every match first, whatever the LIMIT.
            problems.append(f"sorts every match of a range of {ranged.group(1)}: {detail}")
    return problems


def _postgresql(sql: str, params: Any, *, counted_ranges: bool = False) -> list[str]:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    problems: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind, table = node.get("Node Type", ""), node.get("Relation Name", "")
        whole = kind == "Seq Scan" or (kind in ("Index Scan", "Index Only Scan") and "Index Cond" not in node)
        if table in GROWING and whole and not _bounded(sql):
            problems.append(f"reads all of {table}: {kind} {node.get('Index Name') or ''}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return problems


def problems(queries: list[tuple[str, Any]], *, counted_ranges: bool = False) -> list[str]:
    """`sql: problem` for every captured query on a growing table that an index does not answer.

    `counted_ranges`: the code sorts a range only after counting it (from the counters) and
    finding it small, so a range followed by a sort is what it chose, not a read of the history."""
    explain = _postgresql if connection.vendor == "postgresql" else _sqlite
    found = []
    for sql, params in queries:
        if _reads_growing(sql):
            found.extend(f"{sql} -- {problem}" for problem in explain(sql, params, counted_ranges=counted_ranges))
    return found


def checked(queries: list[tuple[str, Any]]) -> int:
    """How many of the captured queries had a plan to check (so a test can tell it checked something)."""
    return sum(1 for sql, _ in queries if _reads_growing(sql))


def sorts(queries: list[tuple[str, Any]]) -> list[str]:
    """The captured queries on a growing table whose plan sorts the rows it read (SQLite's temp
    B-tree, PostgreSQL's Sort node), rather than reading them in order from an index: their cost
    is every row they matched, whatever their LIMIT."""
    found = []
    for sql, params in queries:
        if not _reads_growing(sql) or "ORDER BY" not in sql:
            continue
        if connection.vendor == "postgresql":
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
                plan = cursor.fetchone()[0]
            text = plan if isinstance(plan, str) else json.dumps(plan)
            if '"Node Type": "Sort"' in text or '"Node Type": "Incremental Sort"' in text:
                found.append(sql)
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            if any("USE TEMP B-TREE FOR ORDER BY" in row[-1] for row in cursor.fetchall()):
                found.append(sql)
    return found


def plans(queries: list[tuple[str, Any]]) -> list[str]:
    """SQLite's plan of each captured SELECT or UPDATE on a growing table, its steps joined."""
    found = []
    for sql, params in queries:
        if _reads_growing(sql) and not sql.lstrip().upper().startswith("DELETE"):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
                found.append("; ".join(row[-1] for row in cursor.fetchall()))
    return found
