"""DELETE /api/realtime/calls/{call_id}: ends the call once, hangs up upstream once, keeps the record."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from realtime.models import Call, CallEvent

from .factories import make_call


@pytest.mark.django_db(transaction=True)
def test_it_ends_the_call_and_hangs_up_upstream(api, sdp_offer, asgi_server, pushes):
    call = make_call(sdp_offer)
    pushes.clear()

    response = api.delete(f"/api/realtime/calls/{call.call_id}")

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["message"] == "Call ended"
    assert body["call"]["status"] == "ended"
    assert body["call"]["end_reason"] == "api_hangup"
    assert isinstance(body["call"]["ended_at"], int) and isinstance(body["call"]["duration_seconds"], int)
    call.refresh_from_db()
    assert call.status == Call.Status.ENDED and call.upstream_closed_at is not None
    # It should write exactly one call.ended event, and note the confirmed upstream hangup.
    ended = CallEvent.objects.get(call=call, event_type="call.ended")
    assert (ended.actor, ended.data["reason"]) == ("api", "api_hangup")
    assert CallEvent.objects.filter(call=call, event_type="upstream.hangup").count() == 1
    # One lifecycle push (ended), then the upstream note on the call's own feed.
    assert [(p["event"]["event_type"], p["call"] is not None) for p in pushes] == [("call.ended", True), ("upstream.hangup", False)]
    engine_side = asgi_server.engine("GET", f"calls/{call.upstream_id}").json()
    assert (engine_side["hangup_requests"], engine_side["closed_reason"]) == (1, "hangup")


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_end_an_ended_call_with_409(api, sdp_offer, pushes):
    call = make_call(sdp_offer)
    api.delete(f"/api/realtime/calls/{call.call_id}")
    pushes.clear()

    response = api.delete(f"/api/realtime/calls/{call.call_id}")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "call_not_active"
    assert response.json()["error"]["details"]["status"] == "ended"
    assert CallEvent.objects.filter(call=call, event_type="call.ended").count() == 1
    assert pushes == []


@pytest.mark.django_db
def test_it_answers_404_for_an_unknown_call(api):
    response = api.delete("/api/realtime/calls/call_nope")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "call_not_found"


@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_deletes_end_the_call_once(sdp_offer, asgi_server):
    """Through the real server: one 200, 49 409s, one call.ended event, one upstream hangup."""
    call = make_call(sdp_offer)

    async def delete_all() -> list[int]:
        async with httpx.AsyncClient(base_url=asgi_server.url, timeout=30) as client:
            responses = await asyncio.gather(*(client.delete(f"/api/realtime/calls/{call.call_id}") for _ in range(50)))
        return sorted(r.status_code for r in responses)

    statuses = asyncio.run(delete_all())

    assert statuses == [200] + [409] * 49
    assert CallEvent.objects.filter(call=call, event_type="call.ended").count() == 1
    assert asgi_server.engine("GET", f"calls/{call.upstream_id}").json()["hangup_requests"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_still_ends_the_call_when_the_upstream_hangup_fails(api, sdp_offer, asgi_server):
    call = make_call(sdp_offer)
    asgi_server.engine("POST", "faults", json={"op": "hangup", "status": 500})

    response = api.delete(f"/api/realtime/calls/{call.call_id}")

    assert response.status_code == 200
    call.refresh_from_db()
    assert call.status == Call.Status.ENDED and call.upstream_closed_at is None
    failed = CallEvent.objects.get(call=call, event_type="upstream.hangup_failed")
    assert failed.data["details"]["upstream_status"] == 500


@pytest.mark.django_db(transaction=True)
def test_it_treats_an_upstream_404_as_already_hung_up(api, sdp_offer, asgi_server):
    call = make_call(sdp_offer)
    asgi_server.engine("POST", "faults", json={"op": "hangup", "status": 404})

    api.delete(f"/api/realtime/calls/{call.call_id}")

    note = CallEvent.objects.get(call=call, event_type="upstream.hangup")
    assert note.data["already_gone"] is True


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_answers_in_french_by_default_as_the_seed_does(api, sdp_offer, settings):
    settings.LANGUAGE_CODE = "fr"
    call = make_call(sdp_offer)

    response = api.delete(f"/api/realtime/calls/{call.call_id}")
    again = api.delete(f"/api/realtime/calls/{call.call_id}", HTTP_ACCEPT_LANGUAGE="en")

    assert response.json()["message"] == "Appel terminé"
    assert again.json()["error"]["message"] == "The call is already ended."
