"""Local mode (anonymous from loopback) and production mode (credentials on every request)."""

from __future__ import annotations

import pytest

from realtime.models import Call

ENDPOINTS = [
    ("get", "/api/realtime/calls"),
    ("get", "/api/realtime/calls/call_x"),
    ("get", "/api/realtime/calls/call_x/events"),
    ("delete", "/api/realtime/calls/call_x"),
    ("post", "/api/realtime/calls"),
    ("get", "/api/realtime/stats"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.django_db
def test_it_refuses_anonymous_requests_in_production_mode(api, settings, make_call, method, path):
    settings.REALTIME_LOCAL_MODE = False
    call = make_call()

    response = getattr(api, method)(path.replace("call_x", call.call_id), format="json")

    assert response.status_code == 401
    assert response.json() == {
        "success": False,
        "error": {
            "code": "not_authenticated",
            "message": "Authentication required: send an API key as 'Authorization: Bearer <key>'.",
            "details": {},
        },
    }
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    call.refresh_from_db()
    assert call.status == Call.Status.PENDING


@pytest.mark.django_db
def test_it_lets_anonymous_loopback_requests_in_local_mode(api, settings, make_call):
    settings.REALTIME_LOCAL_MODE = True
    call = make_call()

    listed = api.get("/api/realtime/calls")
    ended = api.delete(f"/api/realtime/calls/{call.call_id}")

    assert listed.status_code == 200 and listed.json()["count"] == 1
    assert ended.status_code == 200
    call.refresh_from_db()
    assert call.status == Call.Status.ENDED
    # It should record no identity: nobody signed in.
    assert call.events.get(event_type="call.ended").data == {"reason": "api_hangup", "duration_seconds": 0}


@pytest.mark.parametrize("address", ["10.0.0.7", "192.168.1.20", "2001:db8::1", "::ffff:10.0.0.7"])
@pytest.mark.django_db
def test_it_refuses_anonymous_requests_from_other_addresses_in_local_mode(api, settings, address):
    settings.REALTIME_LOCAL_MODE = True

    response = api.get("/api/realtime/calls", REMOTE_ADDR=address)

    assert response.status_code == 401


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"])
@pytest.mark.django_db
def test_it_treats_every_loopback_address_as_local(api, settings, address):
    settings.REALTIME_LOCAL_MODE = True

    assert api.get("/api/realtime/stats", REMOTE_ADDR=address).status_code == 200


@pytest.mark.django_db
def test_it_ignores_a_forwarded_for_header_claiming_loopback(api, settings):
    settings.REALTIME_LOCAL_MODE = True

    response = api.get("/api/realtime/calls", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="127.0.0.1")

    assert response.status_code == 401


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:5001"])
@pytest.mark.django_db
def test_it_refuses_a_cross_site_page_driving_the_local_api(api, settings, make_call, origin):
    # Another site open in the developer's browser may POST multipart to localhost without a preflight.
    settings.REALTIME_LOCAL_MODE = True
    call = make_call()

    response = api.delete(f"/api/realtime/calls/{call.call_id}", HTTP_ORIGIN=origin, HTTP_HOST="localhost:5000")

    assert response.status_code == 401
    call.refresh_from_db()
    assert call.status == Call.Status.PENDING


@pytest.mark.django_db
def test_it_accepts_the_local_pages_own_origin(api, settings):
    settings.REALTIME_LOCAL_MODE = True

    response = api.get("/api/realtime/calls", HTTP_ORIGIN="http://localhost:5000", HTTP_HOST="localhost:5000")

    assert response.status_code == 200
