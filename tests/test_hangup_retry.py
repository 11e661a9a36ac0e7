"""Upstream hangup faults, one by one: the call ends here at once (exactly one call.ended), the
failed hangup is recorded with its next try, and the sweeper retries with backoff until OpenAI
confirms or says 404."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from realtime import services, sweeper
from realtime.models import Call, CallEvent

from .factories import make_call


def _end(api, call: Call):
    response = api.delete(f"/api/realtime/calls/{call.call_id}")
    call.refresh_from_db()
    return response


def _sweep_when_due(call: Call) -> sweeper.SweepResult:
    # Time travel by moving the retry time, not the clock: the sweeper compares with now().
    Call.objects.filter(pk=call.pk).update(hangup_retry_at=timezone.now() - timedelta(seconds=1))
    result = async_to_sync(sweeper.sweep_once)()
    call.refresh_from_db()
    return result


def _types(call: Call) -> list[str]:
    return list(CallEvent.objects.filter(call=call).values_list("event_type", flat=True))


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ({"status": 500}, "upstream_error"),
        ({"status": 429, "retry_after": "3"}, "upstream_rate_limited"),
        ({"delay_ms": 1500}, "upstream_timeout"),
        ({"reset": True}, "upstream_error"),
    ],
    ids=["5xx", "429", "timeout", "reset"],
)
@pytest.mark.django_db(transaction=True)
def test_it_ends_the_call_and_retries_a_failed_hangup_until_confirmed(api, sdp_offer, asgi_server, settings, pushes, fault, code):
    settings.OPENAI_TIMEOUT = 0.5
    call = make_call(sdp_offer)
    asgi_server.engine("POST", "faults", json={"op": "hangup", **fault})
    pushes.clear()

    response = _end(api, call)

    # It should end the call here (the caller asked; it is over for us) and say so.
    assert response.status_code == 200
    assert (call.status, call.end_reason) == (Call.Status.ENDED, Call.EndReason.API_HANGUP)
    # It should record the failure with the attempt and the next try, and leave the hangup open.
    assert call.upstream_closed_at is None and call.hangup_attempts == 1
    assert call.hangup_retry_at is not None and call.hangup_retry_at > timezone.now()
    failed = CallEvent.objects.get(call=call, event_type="upstream.hangup_failed")
    assert (failed.data["code"], failed.data["attempt"]) == (code, 1)
    assert [p["event"]["event_type"] for p in pushes] == ["call.ended", "upstream.hangup_failed"]

    # Not due yet: the sweeper leaves it alone.
    assert async_to_sync(sweeper.sweep_once)().hangups_retried == 0

    result = _sweep_when_due(call)

    # It should retry once, get the confirmation, and close the upstream side.
    assert result.hangups_retried == 1
    assert call.upstream_closed_at is not None
    assert _types(call) == ["call.created", "call.answered", "call.ended", "upstream.hangup_failed", "upstream.hangup"]
    assert CallEvent.objects.get(call=call, event_type="upstream.hangup").data["already_gone"] is False
    engine_side = asgi_server.engine("GET", f"calls/{call.upstream_id}").json()
    assert engine_side["closed_reason"] == "hangup"
    # Confirmed: nothing left to retry.
    assert _sweep_when_due(call).hangups_retried == 0


@pytest.mark.django_db(transaction=True)
def test_it_backs_off_between_retries_and_stops_at_404(api, sdp_offer, asgi_server, settings):
    settings.REALTIME_HANGUP_RETRY_SECONDS = 2.0
    call = make_call(sdp_offer)
    asgi_server.engine("POST", "faults", json={"op": "hangup", "status": 503, "count": 3})
    _end(api, call)
    delays = []
    for _ in range(2):
        before = timezone.now()
        _sweep_when_due(call)
        delays.append(round((call.hangup_retry_at - before).total_seconds()))

    # It should double the wait after each failure: 2 s after the first, then 4, then 8.
    assert call.hangup_attempts == 3
    assert delays == [4, 8]
    # The call ends upstream meanwhile (the engine no longer knows it): 404 closes the matter.
    asgi_server.engine("DELETE", "faults")
    gone = httpx.post(
        f"{asgi_server.engine_url}/realtime/calls/{call.upstream_id}/hangup",
        headers={"Authorization": f"Bearer {settings.LOCALREALTIME_API_KEY}"},
        timeout=10,
    )
    assert gone.status_code == 200

    _sweep_when_due(call)

    assert call.upstream_closed_at is not None
    assert CallEvent.objects.filter(call=call, event_type="upstream.hangup").count() == 1
    assert CallEvent.objects.get(call=call, event_type="upstream.hangup").data["already_gone"] is True
    assert CallEvent.objects.filter(call=call, event_type="call.ended").count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_retries_the_hangup_of_a_call_ended_without_one(sdp_offer, asgi_server):
    # A process that died between ending the call and hanging it up leaves no retry time set.
    call = make_call(sdp_offer)
    services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
    Call.objects.filter(pk=call.pk).update(ended_at=timezone.now() - timedelta(seconds=sweeper.HANGUP_GRACE_SECONDS + 1))

    result = async_to_sync(sweeper.sweep_once)()

    call.refresh_from_db()
    assert result.hangups_retried == 1 and call.upstream_closed_at is not None
    assert asgi_server.engine("GET", f"calls/{call.upstream_id}").json()["closed_reason"] == "hangup"


@pytest.mark.django_db(transaction=True)
def test_it_claims_a_due_hangup_retry_for_one_sweeper_only(sdp_offer, asgi_server):
    call = make_call(sdp_offer)
    services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
    now = timezone.now()
    Call.objects.filter(pk=call.pk).update(ended_at=now - timedelta(seconds=20))

    first = services.hangup_retry_claim(now=now, grace_seconds=10, claim_seconds=30, limit=50)
    second = services.hangup_retry_claim(now=now, grace_seconds=10, claim_seconds=30, limit=50)

    assert [c.pk for c in first] == [call.pk] and second == []
    call.refresh_from_db()
    assert call.hangup_retry_at == now + timedelta(seconds=30)
    # It should write nothing else: a claim is not a change of the call's state.
    assert (call.status, list(CallEvent.objects.filter(call=call).values_list("event_type", flat=True))) == (
        Call.Status.ENDED,
        ["call.created", "call.answered", "call.ended"],
    )
