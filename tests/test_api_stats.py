"""GET /api/realtime/stats: the seed's fields and more, read from the counters kept with every change."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

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
        "calls_by_source": {},
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_cost_usd": 0.0,
        "usage_by_model": {},
        "calls_by_end_reason": {},
        "total_duration_seconds": 0.0,
    }


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_counts_calls_by_status_model_and_voice(api, sdp_offer, django_assert_max_num_queries):
    make_call(sdp_offer, {"model": "gpt-4o-realtime-preview", "voice": "alloy"})
    ended = make_call(sdp_offer, {"model": "gpt-4o-realtime-preview", "voice": "echo"})
    make_call(sdp_offer, {"model": "gpt-realtime", "voice": "echo"})
    # Five minutes long: it started 300 s before it ends (statistics count what services recorded).
    ended.created_at = timezone.now() - timedelta(seconds=300)
    Call.objects.filter(pk=ended.pk).update(created_at=ended.created_at)
    end_call(ended)

    with django_assert_max_num_queries(5):
        body = api.get("/api/realtime/stats/").json()

    stats = body["stats"]
    assert body["success"] is True
    assert (stats["total_calls"], stats["active_calls"], stats["ended_calls"]) == (3, 2, 1)
    assert stats["avg_duration_seconds"] == pytest.approx(300, abs=1)  # ended a moment after the 300 s mark
    assert stats["total_events"] == 3 * 2 + 2  # created + answered each, then ended + upstream.hangup
    assert stats["calls_by_model"] == {"gpt-4o-realtime-preview": 2, "gpt-realtime": 1}
    assert stats["calls_by_voice"] == {"alloy": 1, "echo": 2}
    assert stats["calls_by_end_reason"] == {"api_hangup": 1}
    assert stats["calls_by_source"] == {"webrtc": 3}
