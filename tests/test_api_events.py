"""GET /api/realtime/calls/{call_id}/events."""

from __future__ import annotations

import pytest

from .factories import end_call, make_call


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_lists_a_calls_events_in_order_in_the_seed_shape(api, sdp_offer):
    call = make_call(sdp_offer, {"model": "gpt-4o-realtime-preview", "voice": "alloy"})
    end_call(call)

    body = api.get(f"/api/realtime/calls/{call.call_id}/events").json()

    assert body["success"] is True
    assert [e["event_type"] for e in body["data"]] == ["call.created", "call.answered", "call.ended", "upstream.hangup"]
    assert body["count"] == 4
    created = body["data"][0]
    assert set(created) == {"id", "call_id", "event_type", "timestamp", "event_data", "actor"}
    assert created["call_id"] == call.call_id and isinstance(created["timestamp"], int)
    assert created["event_data"]["model"] == "gpt-4o-realtime-preview" and created["event_data"]["voice"] == "alloy"
    assert body["data"][2]["event_data"]["duration_seconds"] >= 0


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_filters_by_event_type_and_limits(api, sdp_offer):
    call = make_call(sdp_offer)
    end_call(call)

    filtered = api.get(f"/api/realtime/calls/{call.call_id}/events?event_type=call.ended").json()
    limited = api.get(f"/api/realtime/calls/{call.call_id}/events?limit=2").json()

    assert [e["event_type"] for e in filtered["data"]] == ["call.ended"] and filtered["count"] == 1
    assert [e["event_type"] for e in limited["data"]] == ["call.created", "call.answered"] and limited["count"] == 4


@pytest.mark.django_db
def test_it_answers_404_for_the_events_of_an_unknown_call(api):
    response = api.get("/api/realtime/calls/call_nope/events")

    assert response.status_code == 404


@pytest.mark.django_db
def test_it_refuses_a_bad_limit(api):
    response = api.get("/api/realtime/calls/call_nope/events?limit=-5")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "limit"
