"""GET /api/realtime/calls and GET /api/realtime/calls/{call_id}."""

from __future__ import annotations

import pytest

from realtime import services
from realtime.models import Call, CallEvent
from realtime.sessions import parse_session

from .factories import end_call, make_call

LIST_ITEM_KEYS = {"call_id", "model", "status", "created_at", "voice"}


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_lists_calls_newest_first_with_the_total_count(api, sdp_offer):
    first, second, third = (make_call(sdp_offer, {"voice": v}) for v in ("alloy", "echo", "shimmer"))

    response = api.get("/api/realtime/calls")

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["count"] == 3
    assert [c["call_id"] for c in body["data"]] == [third.call_id, second.call_id, first.call_id]
    assert LIST_ITEM_KEYS <= set(body["data"][0])
    assert "sdp_answer" not in body["data"][0]


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_pages_with_limit_and_offset_and_filters_by_status(api, sdp_offer):
    calls = [make_call(sdp_offer) for _ in range(4)]
    end_call(calls[0])
    end_call(calls[2])

    page = api.get("/api/realtime/calls?limit=1&offset=1&status=ended").json()
    active = api.get("/api/realtime/calls/?status=active").json()

    assert page["count"] == 2
    assert [c["call_id"] for c in page["data"]] == [calls[0].call_id]
    assert active["count"] == 2
    assert {c["call_id"] for c in active["data"]} == {calls[1].call_id, calls[3].call_id}


@pytest.mark.django_db
def test_it_caps_the_limit(api, settings):
    settings.REALTIME_LIST_MAX_LIMIT = 2

    assert api.get("/api/realtime/calls?limit=1000").status_code == 200


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=abc", "limit"), ("offset=-1", "offset"), ("status=ringing", "status")],
)
@pytest.mark.django_db
def test_it_refuses_bad_list_parameters(api, query, field):
    response = api.get(f"/api/realtime/calls?{query}")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == field


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_returns_one_call_in_the_seed_shape(api, sdp_offer):
    call = make_call(sdp_offer, {"model": "gpt-4o-realtime-preview", "voice": "echo", "modalities": ["audio"]})

    response = api.get(f"/api/realtime/calls/{call.call_id}")

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert {k: body["call"][k] for k in ("call_id", "model", "status", "voice", "modalities", "duration_seconds")} == {
        "call_id": call.call_id,
        "model": "gpt-4o-realtime-preview",
        "status": "active",
        "voice": "echo",
        "modalities": ["audio"],
        "duration_seconds": None,
    }
    assert body["call"]["created_at"] == int(call.created_at.timestamp())
    assert body["call"]["upstream_model"] == "gpt-realtime-2.1"


@pytest.mark.parametrize("path", ["/api/realtime/calls/call_doesnotexist", "/api/realtime/calls/call_doesnotexist/"])
@pytest.mark.django_db
def test_it_answers_404_in_the_error_shape_for_an_unknown_call(api, path):
    response = api.get(path)

    assert response.status_code == 404
    assert response.json() == {
        "success": False,
        "error": {"code": "call_not_found", "message": "No call with id 'call_doesnotexist'.", "details": {"call_id": "call_doesnotexist"}},
    }


@pytest.mark.django_db
def test_it_answers_404_in_the_error_shape_for_an_unknown_api_path(api):
    response = api.get("/api/realtime/nothing-here")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
def test_it_answers_405_for_an_unsupported_method(api):
    response = api.put("/api/realtime/calls", {}, format="json")

    assert response.status_code == 405
    assert response.json()["success"] is False
    assert not Call.objects.exists()


@pytest.mark.upstream
@pytest.mark.parametrize("slash", ["", "/"])
@pytest.mark.parametrize("path", ["calls", "calls/{call_id}", "calls/{call_id}/events", "calls/{call_id}/transcript", "stats"])
@pytest.mark.django_db(transaction=True)
def test_it_answers_every_path_with_and_without_a_trailing_slash(api, sdp_offer, path, slash):
    call = make_call(sdp_offer)

    response = api.get("/api/realtime/" + path.format(call_id=call.call_id) + slash)

    assert response.status_code == 200 and response.json()["success"] is True
    end_call(call)


@pytest.mark.django_db
def test_it_pages_in_the_seed_shape(api):
    body = api.get("/api/realtime/calls?limit=5&offset=3").json()

    assert body == {"success": True, "data": [], "count": 0}


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_serves_the_largest_page_when_asked_for_more(api, sdp_offer, settings):
    calls = [make_call(sdp_offer) for _ in range(3)]
    settings.REALTIME_LIST_MAX_LIMIT = 2

    body = api.get("/api/realtime/calls?limit=1000").json()

    assert body["count"] == 3 and [c["call_id"] for c in body["data"]] == [calls[2].call_id, calls[1].call_id]
    for call in calls:
        end_call(call)


@pytest.mark.django_db
def test_it_pages_through_every_call_with_the_cursor_newest_first(api):
    made = [
        services.call_open(offer="v=0", session=parse_session({}), source=Call.Source.WEBRTC, actor=CallEvent.Actor.API).call_id
        for _ in range(5)
    ]
    seen, params = [], {"limit": 2}
    while True:
        body = api.get("/api/realtime/calls", params).json()
        seen += [c["call_id"] for c in body["data"]]
        assert body["count"] == 5
        if "next_cursor" not in body:
            break
        params = {"limit": 2, "cursor": body["next_cursor"]}

    # Every call once, newest first (same created_at order as offset pages), and no cursor after the last page.
    assert seen == list(reversed(made))
    bad = api.get("/api/realtime/calls", {"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "cursor"
