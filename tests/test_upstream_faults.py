"""What an upstream failure during call setup returns, and the record it leaves: `failed`, never `active`."""

from __future__ import annotations

import pytest

from realtime.models import Call, CallEvent


def _create(api, offer):
    return api.post("/api/realtime/calls", {"sdp": offer, "session": {"voice": "echo"}}, format="json")


def _assert_failed_call_left(code: str, pushes) -> CallEvent:
    call = Call.objects.get()
    assert (call.status, call.end_reason, call.upstream_id) == (Call.Status.FAILED, Call.EndReason.UPSTREAM_ERROR, "")
    assert list(call.events.values_list("event_type", flat=True)) == ["call.created", "call.failed"]
    failed = call.events.get(event_type="call.failed")
    assert failed.data["code"] == code
    assert [p["call"]["status"] for p in pushes] == ["pending", "failed"]
    return failed


@pytest.mark.django_db(transaction=True)
def test_it_maps_an_upstream_5xx_to_502(api, sdp_offer, asgi_server, pushes):
    asgi_server.engine("POST", "faults", json={"op": "create", "status": 500})

    response = _create(api, sdp_offer)

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert error["details"]["upstream_status"] == 500
    assert error["details"]["upstream_code"] == "scripted_fault"
    _assert_failed_call_left("upstream_error", pushes)


@pytest.mark.django_db(transaction=True)
def test_it_maps_an_upstream_timeout_to_504(api, sdp_offer, asgi_server, settings, pushes):
    settings.OPENAI_TIMEOUT = 0.5
    asgi_server.engine("POST", "faults", json={"op": "create", "delay_ms": 2000})

    response = _create(api, sdp_offer)

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    _assert_failed_call_left("upstream_timeout", pushes)


@pytest.mark.django_db(transaction=True)
def test_it_passes_on_upstream_rate_limiting_with_retry_after(api, sdp_offer, asgi_server, pushes):
    asgi_server.engine("POST", "faults", json={"op": "create", "status": 429, "retry_after": "7"})

    response = _create(api, sdp_offer)

    assert response.status_code == 429
    assert response["Retry-After"] == "7"
    assert response.json()["error"]["code"] == "upstream_rate_limited"
    _assert_failed_call_left("upstream_rate_limited", pushes)


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_malformed_upstream_answer(api, sdp_offer, asgi_server, pushes):
    asgi_server.engine("POST", "faults", json={"op": "create", "body": "malformed"})

    response = _create(api, sdp_offer)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    _assert_failed_call_left("upstream_error", pushes)


@pytest.mark.django_db(transaction=True)
def test_it_reports_an_unreachable_upstream_as_502(api, sdp_offer, settings, pushes):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # discard port: nothing listens

    response = _create(api, sdp_offer)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    _assert_failed_call_left("upstream_error", pushes)


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_reports_an_upstream_auth_failure_as_502(api, sdp_offer, settings, pushes):
    settings.LOCALREALTIME_API_KEY = "sk-wrong"

    response = _create(api, sdp_offer)

    assert response.status_code == 502
    assert response.json()["error"]["details"]["upstream_code"] == "invalid_api_key"
    _assert_failed_call_left("upstream_error", pushes)


@pytest.mark.django_db(transaction=True)
def test_it_reports_a_connection_reset_as_502_without_retrying_the_create(api, sdp_offer, asgi_server, pushes):
    before = asgi_server.engine("GET", "stats").json()["requests"]["create"]
    asgi_server.engine("POST", "faults", json={"op": "create", "reset": True})

    response = _create(api, sdp_offer)

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert error["details"]["reason"] in ("ServerDisconnectedError", "ClientOSError")
    _assert_failed_call_left("upstream_error", pushes)
    # It should have sent the create once: a reset create may have started a call upstream.
    assert asgi_server.engine("GET", "stats").json()["requests"]["create"] == before + 1
