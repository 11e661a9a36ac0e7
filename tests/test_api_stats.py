"""GET /api/realtime/stats: the seed's fields, computed by SQL aggregates."""

from __future__ import annotations

import pytest

from realtime.models import Call

from .factories import end_call, make_call


@pytest.mark.django_db
def test_it_reports_zeroes_with_no_calls(api):
    stats = api.get("/api/realtime/stats").json()["stats"]

    assert stats == {
        "total_calls": 0,
        "pending_calls": 0,
        "active_calls": 0,
        "ended_calls": 0,
        "failed_calls": 0,
        "avg_duration_seconds": 0.0,
        "total_events": 0,
        "calls_by_model": {},
        "calls_by_voice": {},
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_cost_usd": 0.0,
        "usage_by_model": {},
    }


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_counts_calls_by_status_model_and_voice(api, sdp_offer, django_assert_max_num_queries):
    make_call(sdp_offer, {"model": "gpt-4o-realtime-preview", "voice": "alloy"})
    ended = make_call(sdp_offer, {"model": "gpt-4o-realtime-preview", "voice": "echo"})
    make_call(sdp_offer, {"model": "gpt-realtime", "voice": "echo"})
    end_call(ended)
    Call.objects.filter(pk=ended.pk).update(duration_seconds=300)

    with django_assert_max_num_queries(5):
        body = api.get("/api/realtime/stats/").json()

    stats = body["stats"]
    assert body["success"] is True
    assert (stats["total_calls"], stats["active_calls"], stats["ended_calls"]) == (3, 2, 1)
    assert stats["avg_duration_seconds"] == 300.0
    assert stats["total_events"] == 3 * 2 + 2  # created + answered each, then ended + upstream.hangup
    assert stats["calls_by_model"] == {"gpt-4o-realtime-preview": 2, "gpt-realtime": 1}
    assert stats["calls_by_voice"] == {"alloy": 1, "echo": 2}
