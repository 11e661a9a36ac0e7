"""GET /api/realtime/calls/export and the admin's export action: every matching call, one row
each, streamed in keyset pages, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from django.http import StreamingHttpResponse

from realtime import exports, services, upstream
from realtime.models import ApiKey, Call, CallEvent
from realtime.sessions import parse_session

from . import query_plans

# The test client is sync: it reads the stream whole (the ASGI server sends it page by page).
pytestmark = pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")


def _body(response: Any) -> str:
    assert isinstance(response, StreamingHttpResponse)
    # Iterating it from sync code drives its async iterator (as WSGI would; ASGI streams it).
    return b"".join(response).decode()


@pytest.fixture
def history(db: None) -> dict[str, Any]:
    """Three web calls (one with a key, usage and cost; ended) and a phone call from a number
    that a spreadsheet would run as a formula."""
    key = ApiKey(name="integrator")
    raw = services.api_key_create(key, by=services.SYSTEM)
    made = []
    for i, voice in enumerate(("alloy", "echo", "marin")):
        call = services.call_open(
            offer="v=0", session=parse_session({"voice": voice}), source="webrtc", actor="api", api_key=key if i == 0 else None
        )
        services.call_answer(call=call, created=upstream.CreatedCall(upstream_id=f"rtc_{i}", sdp_answer="v=0"))
        made.append(call)
    usage = {"input_tokens": 120, "output_tokens": 80}
    services.call_record_events(
        call=made[0],
        events=[services.UpstreamEvent("response.done", "ev_1", {"response": {"usage": usage}}, made[0].created_at)],
    )
    services.call_end(call=made[0], reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
    decision = services.SipDecision(accept=True, session=parse_session({}))
    phone = services.sip_call_receive(
        webhook_id="wh_1", upstream_id="rtc_phone", caller='=HYPERLINK("http://x")', called="-1+2", headers=[], decision=decision
    )
    return {"calls": [Call.objects.get(pk=c.pk) for c in made], "phone": phone, "key": key, "raw": raw}


def test_it_exports_one_csv_row_per_call_with_usage_cost_and_times(api, history):
    response = api.get("/api/realtime/calls/export", {"format": "csv"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="calls-') and response["Content-Disposition"].endswith('.csv"')
    rows = list(csv.DictReader(io.StringIO(_body(response))))
    assert list(rows[0]) == list(exports.COLUMNS)
    first = history["calls"][0]
    assert [r["call_id"] for r in rows] == [history["phone"].call_id, *(c.call_id for c in reversed(history["calls"]))]
    ended = rows[-1]
    assert ended["status"] == "ended" and ended["end_reason"] == "api_hangup"
    assert ended["api_key"] == history["key"].prefix and ended["voice"] == "alloy" and ended["source"] == "webrtc"
    assert (ended["input_tokens"], ended["output_tokens"]) == ("120", "80")
    assert first.cost_usd is not None and Decimal(ended["cost_usd"]) == first.cost_usd
    assert json.loads(ended["usage"]) == first.usage
    assert float(ended["duration_seconds"]) == first.duration_seconds
    assert ended["created_at"] == first.created_at.isoformat().replace("+00:00", "Z")
    assert ended["ended_at"].endswith("Z") and ended["answered_at"].endswith("Z")


def test_it_defuses_cells_a_spreadsheet_would_run_as_formulas(api, history):
    rows = list(csv.DictReader(io.StringIO(_body(api.get("/api/realtime/calls/export")))))

    phone = rows[0]
    assert phone["caller"] == '\'=HYPERLINK("http://x")'
    assert phone["called"] == "'-1+2"
    assert phone["source"] == "sip"


def test_it_exports_json_lines_with_the_same_filters_and_order(api, history):
    response = api.get("/api/realtime/calls/export", {"format": "jsonl", "status": "active", "ordering": "created_at"})

    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    lines = [json.loads(line) for line in _body(response).splitlines()]
    assert [line["call_id"] for line in lines] == [c.call_id for c in history["calls"][1:]]
    assert lines[0]["usage"] == {} and lines[0]["ended_at"] is None and lines[0]["caller"] == ""


def test_it_reads_in_keyset_pages_each_from_an_index(api, history, monkeypatch):
    monkeypatch.setattr(exports, "PAGE", 1)

    with query_plans.capture() as queries:
        lines = _body(api.get("/api/realtime/calls/export", {"format": "jsonl", "ordering": "-created_at"})).splitlines()

    assert len(lines) == 4
    pages = [sql for sql, _ in queries if '"realtime_call"' in sql and "LIMIT 1" in sql]
    assert len(pages) == 5  # four full pages, and the empty one that ends the stream
    assert all("OFFSET" not in sql for sql in pages)
    assert query_plans.problems(queries) == []


def test_it_exports_only_the_calls_a_key_may_see(api, history):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {history['raw']}")

    lines = _body(api.get("/api/realtime/calls/export", {"format": "jsonl"})).splitlines()

    assert [json.loads(line)["call_id"] for line in lines] == [history["calls"][0].call_id]


def test_it_answers_an_empty_file_with_its_header(api, history):
    body = _body(api.get("/api/realtime/calls/export", {"voice": "nobody"}))

    assert body == ",".join(exports.COLUMNS) + "\r\n"


@pytest.mark.parametrize(
    ("query", "field"),
    [("format=xlsx", "format"), ("cursor=abc", "cursor"), ("limit=10", "limit"), ("min_cost=x", "min_cost"), ("colour=red", "colour")],
)
@pytest.mark.django_db
def test_it_refuses_bad_export_parameters_in_json(api, query, field):
    response = api.get(f"/api/realtime/calls/export?{query}")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["details"]["field"] == field


def test_the_admin_action_exports_the_selection(admin_client, history):
    chosen = [history["calls"][0], history["phone"]]

    response = admin_client.post("/admin/realtime/call/", {"action": "export_calls", "_selected_action": [c.pk for c in chosen]})

    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(_body(response))))
    assert [r["call_id"] for r in rows] == [history["phone"].call_id, history["calls"][0].call_id]
    assert rows[0]["caller"].startswith("'=")
