"""Every query of the request paths and background passes is answered from an index, so each
costs the same at a million calls as at ten (see docs/benchmarks.md, "A million calls").

Each test runs one path for real (the API through its client, the admin pages, the services, the
sweeper's and monitors' passes) and checks the plan of every query it ran on the calls and events
tables (tests/query_plans.py): a change that makes one of them read the whole history fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from realtime import idempotency, services, sweeper, upstream
from realtime.admin import CallAdmin, CallEventAdmin
from realtime.consumers import _find_call
from realtime.exceptions import UpstreamError
from realtime.models import ApiKey, Call, CallEvent
from realtime.sessions import parse_session

from . import query_plans


def _assert_indexed(run: Callable[[], Any]) -> Any:
    with query_plans.capture() as queries:
        result = run()
    assert query_plans.checked(queries) > 0, "the path ran no query on calls or events: nothing was checked"
    assert query_plans.problems(queries) == []
    return result


@pytest.fixture
def history(db: None) -> dict[str, Any]:
    """Calls in every state (one active with sideband events, three ended, one failed), most with an API key."""
    key = ApiKey(name="integrator")
    raw = services.api_key_create(key, by=services.SYSTEM)
    calls = []
    for i in range(4):
        call = services.call_open(
            offer="v=0", session=parse_session({"voice": "echo"}), source="webrtc", actor="api", api_key=key if i else None
        )
        services.call_answer(call=call, created=upstream.CreatedCall(upstream_id=f"rtc_{i}abc", sdp_answer="v=0"))
        calls.append(call)
    item = {"id": "item_1", "type": "message", "role": "assistant", "content": [{"type": "output_audio", "transcript": "Bonjour"}]}
    services.call_record_events(
        call=calls[0],
        events=[
            services.UpstreamEvent("conversation.item.done", "event_1", {"item": item}, timezone.now()),
            services.UpstreamEvent(
                "response.done", "event_2", {"response": {"usage": {"input_tokens": 10, "output_tokens": 5}}}, timezone.now()
            ),
        ],
    )
    for ended in calls[1:]:
        services.call_end(call=ended, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
    for confirmed in calls[2:]:
        services.call_note_upstream_closed(call=confirmed, hung_up=True)
    failed = services.call_open(offer="v=0", session=parse_session({}), source="sip", actor="api")
    services.call_fail(call=failed, error=UpstreamError("refused"))
    return {"calls": calls, "key": key, "raw": raw, "failed": failed}


def test_it_answers_every_api_read_from_an_index(history):
    api, call = APIClient(), history["calls"][0]
    keyed = APIClient()
    keyed.credentials(HTTP_AUTHORIZATION=f"Bearer {history['raw']}")

    def reads() -> None:
        first = api.get("/api/realtime/calls", {"limit": 2}).json()
        assert first["count"] == 5 and len(first["data"]) == 2
        assert api.get("/api/realtime/calls", {"limit": 2, "cursor": first["next_cursor"]}).status_code == 200
        assert api.get("/api/realtime/calls", {"status": "active", "offset": 1}).status_code == 200
        assert keyed.get("/api/realtime/calls", {"status": "ended"}).json()["count"] == 3
        assert api.get(f"/api/realtime/calls/{call.call_id}").status_code == 200
        assert api.get(f"/api/realtime/calls/{call.call_id}/events").json()["count"] == 4
        assert api.get(f"/api/realtime/calls/{call.call_id}/events", {"event_type": "response.done"}).status_code == 200
        assert api.get(f"/api/realtime/calls/{call.call_id}/transcript").json()["count"] == 1
        assert api.get("/api/realtime/stats").json()["stats"]["total_calls"] == 5
        assert keyed.get("/api/realtime/stats").json()["stats"]["total_calls"] == 3

    _assert_indexed(reads)


def test_it_changes_calls_through_indexes(history, settings):
    # The concurrency check counts live calls (in all and per key) inside the create's transaction.
    settings.REALTIME_MAX_ACTIVE_CALLS, settings.REALTIME_MAX_ACTIVE_CALLS_PER_KEY = 100, 10
    key = history["key"]

    def changes() -> None:
        call = services.call_open(offer="v=0", session=parse_session({}), source="webrtc", actor="api", api_key=key)
        services.call_answer(call=call, created=upstream.CreatedCall(upstream_id="rtc_new", sdp_answer="v=0"))
        services.call_note_hangup_failed(call=call, error=UpstreamError("no"))
        services.call_end(call=Call.objects.only("pk").get(pk=call.pk), reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
        services.call_note_upstream_closed(call=call, hung_up=True)
        pending = services.call_open(offer="v=0", session=parse_session({}), source="webrtc", actor="api")
        services.call_end(call=pending, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
        services.call_note_upstream_id(call=pending, upstream_id="rtc_late")
        assert _find_call.func(call.call_id) is not None  # the WebSocket feed's lookup, without its thread hop

    _assert_indexed(changes)


def test_it_sweeps_through_indexes(history):
    ended = history["calls"][1]
    Call.objects.filter(pk=ended.pk).update(ended_at=timezone.now() - timedelta(hours=1))

    def passes() -> None:
        now = timezone.now()
        sweeper.due_calls(now=now)
        assert [c.pk for c in sweeper.claim_hangup_retries(now=now)] == [ended.pk]
        idempotency.forget_expired(now=now)

    _assert_indexed(passes)


def test_it_finds_calls_past_a_limit_in_index_order(history):
    # Each reason's calls come oldest first from an index: read in order, never every live call
    # sorted (a pass costs what is due, not what is live).
    with query_plans.capture() as queries:
        due = sweeper.due_calls(now=timezone.now() + timedelta(hours=2))

    assert [(call.pk, reason) for call, reason, _data in due] == [(history["calls"][0].pk, Call.EndReason.MAX_DURATION)]
    assert len(queries) == 4  # pending past setup; active past their deadline, idle after speech, idle silent
    assert query_plans.problems(queries) == []
    if connection.vendor == "sqlite":
        # (PostgreSQL weighs a sort of a few rows against an index walk from its statistics.)
        assert query_plans.sorts(queries) == []


def test_it_monitors_through_indexes(history):
    def passes() -> None:
        claimed = services.monitor_claim(owner="test", lease_seconds=10, limit=10)
        assert len(claimed) == 1  # the active call
        ids = [c.call.pk for c in claimed]
        assert services.monitor_renew(owner="test", lease_seconds=10, call_ids=ids) == set(ids)
        services.monitor_release(owner="test", call_ids=ids)

    _assert_indexed(passes)


def test_it_claims_and_renews_leases_without_reading_every_active_call(history):
    # Each query reads the calls it claims or renews, from an index in order or by id: a tick
    # that finds nothing to claim costs the same with ten thousand active calls as with one.
    with query_plans.capture() as queries:
        ids = [claimed.call.pk for claimed in services.monitor_claim(owner="test", lease_seconds=10, limit=10)]
        assert services.monitor_claim(owner="other", lease_seconds=10, limit=10) == []
        services.monitor_renew(owner="test", lease_seconds=10, call_ids=ids)

    assert query_plans.problems(queries) == []
    if connection.vendor == "sqlite":
        assert query_plans.sorts(queries) == []
        plans = query_plans.plans(queries)
        assert all("call_monitor_claim_idx" in plan or "PRIMARY KEY" in plan for plan in plans), plans


@pytest.fixture
def staff_client(db: None, monkeypatch: pytest.MonkeyPatch) -> Client:
    # Pages of one: with a short history on more than one page, the lists run the queries they
    # run on a long one (a list that fits on one page is read without a LIMIT).
    monkeypatch.setattr(CallAdmin, "list_per_page", 1)
    monkeypatch.setattr(CallEventAdmin, "list_per_page", 1)
    user = User.objects.create_superuser("sophie", password="pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"status__exact": "active"},
        {"end_reason__exact": "api_hangup"},
        {"source__exact": "sip"},
        {"model": "gpt-realtime"},
        {"voice": "echo"},
        {"upstream_hangup": "unconfirmed"},
        {"upstream_hangup": "confirmed"},
        {"created_at__gte": "2026-01-01 00:00:00+00:00", "created_at__lt": "2027-01-01 00:00:00+00:00"},
        {"o": "8"},  # by cost
        {"q": "FULL_CALL_ID"},
        {"q": "call_"},
        {"q": "rtc_1"},
        {"q": "call_1a2b3c…"},  # the short id the demo page shows
        {"q": "1a2b3c"},
        {"q": "+33 6 12"},  # a caller number's beginning
    ],
    ids=lambda q: "&".join(f"{k}={v}" for k, v in q.items()) or "all",
)
def test_it_lists_filters_and_searches_calls_in_the_admin_through_indexes(history, staff_client, query):
    query = {k: history["calls"][0].call_id if v == "FULL_CALL_ID" else v for k, v in query.items()}

    page = _assert_indexed(lambda: staff_client.get("/admin/realtime/call/", query))

    assert page.status_code == 200


def test_it_shows_a_call_and_its_events_in_the_admin_through_indexes(history, staff_client):
    call = history["calls"][0]

    def pages() -> None:
        assert staff_client.get(f"/admin/realtime/call/{call.pk}/change/").status_code == 200
        assert staff_client.get("/admin/realtime/callevent/").status_code == 200
        assert call.call_id in staff_client.get("/admin/realtime/callevent/", {"q": call.call_id}).content.decode()
        assert staff_client.get("/admin/realtime/callevent/", {"event_type": "call.ended", "actor__exact": "api"}).status_code == 200

    _assert_indexed(pages)


def test_the_check_fails_a_query_that_reads_the_whole_history(history):
    # The checker itself: a filter no index serves is reported (a suffix match reads every row on
    # SQLite and PostgreSQL alike).
    with query_plans.capture() as queries:
        list(Call.objects.filter(voice__endswith="n"))
        list(CallEvent.objects.filter(event_type__endswith=".done"))

    assert len(query_plans.problems(queries)) == 2


def test_the_check_fails_a_range_sorted_in_another_order(history):
    # A page of the newest calls among a range of durations: the LIMIT stops nothing, every
    # call in the range is read to be sorted by date.
    with query_plans.capture() as queries:
        list(Call.objects.filter(duration_seconds__gt=10, duration_seconds__lt=20).order_by("-created_at", "-id")[:5])

    if connection.vendor == "sqlite":
        (problem,) = query_plans.problems(queries)
        assert "sorts every match of a range of realtime_call" in problem and "call_duration_idx" in problem
    else:
        # PostgreSQL weighs the range from its statistics (the check is SQLite's): still indexed.
        assert query_plans.problems(queries) == []
