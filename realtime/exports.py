"""Calls as a file (CSV or JSON lines), streamed: `GET /api/realtime/calls/export` and the admin's
export action.

Rows are read in keyset pages (each page starts where the last ended, through the ordering's
index), and each page is encoded and sent before the next is read: memory stays one page,
whatever the number of calls, and no query skips rows as an OFFSET would. The stream is an
async iterator, so the ASGI server sends each page as it comes (a sync iterator would be read
whole before the first byte under ASGI); pages are read on the database thread.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from django.db.models import F, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from . import selectors, services
from .models import Call

# Calls read per query: big enough that per-query costs vanish, small enough to hold.
PAGE = 1000
# One row per call: (column, the value read).
COLUMNS = (
    "call_id",
    "upstream_id",
    "status",
    "source",
    "model",
    "upstream_model",
    "voice",
    "api_key",
    "caller",
    "called",
    "created_at",
    "answered_at",
    "ended_at",
    "duration_seconds",
    "end_reason",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_p95_ms",
    "usage",
)
# Columns named apart from the field they show.
_SOURCES = {"api_key": "key_prefix", "caller": "sip_caller", "called": "sip_called"}
_FIELDS = tuple(_SOURCES.get(c, c) for c in COLUMNS if c != "api_key")
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): callers and
# SIP headers are anyone's text.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


# Columns holding text (some of it anyone's: caller numbers are what the carrier sent), and times.
_TEXT = ("call_id", "upstream_id", "status", "source", "model", "upstream_model", "voice", "api_key", "caller", "called", "end_reason")
_TIMES = ("created_at", "answered_at", "ended_at")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _page(calls: QuerySet[Call], ordering: str, after: tuple[Any, int] | None) -> tuple[list[dict[str, Any]], tuple[Any, int] | None]:
    """One page of rows as the files show them, and the position after its last call."""
    field = selectors.ORDER_FIELDS[ordering.lstrip("-")]
    rows = list(selectors.call_order(calls, ordering, after=after).values("id", *_FIELDS, key_prefix=F("api_key__prefix"))[:PAGE])
    if not rows:
        return [], None
    position = (rows[-1][field], rows[-1]["id"])
    shown = []
    for row in rows:
        line = {column: row[_SOURCES.get(column, column)] for column in COLUMNS}
        for column in _TIMES:
            line[column] = _iso(line[column])
        if line["cost_usd"] is not None:
            line["cost_usd"] = str(line["cost_usd"])
        shown.append(line)
    return shown, position


def _safe(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA) else text


def encode_csv(rows: list[dict[str, Any]], *, header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(COLUMNS)
    for row in rows:
        for column in _TEXT:
            row[column] = _safe(row[column] or "")
        row["usage"] = json.dumps(row["usage"], separators=(",", ":"), sort_keys=True)
        writer.writerow(row.values())
    return out.getvalue()


def encode_jsonl(rows: list[dict[str, Any]], *, header: bool) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


ENCODERS: dict[str, tuple[Callable[..., str], str]] = {
    "csv": (encode_csv, "text/csv; charset=utf-8"),
    "jsonl": (encode_jsonl, "application/x-ndjson; charset=utf-8"),
}


async def stream(calls: QuerySet[Call], *, ordering: str, file_format: str) -> AsyncIterator[bytes]:
    """The file, one page of calls at a time."""
    encode = ENCODERS[file_format][0]
    read = services.in_db_thread(_page)
    rows, after = await read(calls, ordering, None)
    yield encode(rows, header=True).encode()
    while len(rows) == PAGE:
        rows, after = await read(calls, ordering, after)
        if rows:
            yield encode(rows, header=False).encode()


def response(calls: QuerySet[Call], *, ordering: str = selectors.DEFAULT_ORDERING, file_format: str = "csv") -> StreamingHttpResponse:
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    answer = StreamingHttpResponse(stream(calls, ordering=ordering, file_format=file_format), content_type=ENCODERS[file_format][1])
    answer["Content-Disposition"] = f'attachment; filename="calls-{stamp}.{file_format}"'
    return answer
