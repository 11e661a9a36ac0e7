"""Throttling: per API key, per staff user, per anonymous address; 429 in our shape with Retry-After."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from realtime.models import Call


def _assert_throttled(response: Any) -> None:
    assert response.status_code == 429
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "throttled"
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= 60
    assert body["error"]["details"] == {"retry_after": retry_after}


def _key_client(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.mark.django_db
def test_it_throttles_each_key_on_its_own(settings, make_key):
    settings.REALTIME_LOCAL_MODE = False
    settings.REALTIME_THROTTLE_RATES = {"api_key": "3/min", "anonymous": "100/min", "staff": "100/min"}
    _a, alice = make_key("alice")
    _b, bob = make_key("bob")

    answers = [_key_client(alice).get("/api/realtime/calls").status_code for _ in range(3)]
    throttled = _key_client(alice).get("/api/realtime/calls")

    assert answers == [200, 200, 200]
    _assert_throttled(throttled)
    # It should leave other keys alone.
    assert _key_client(bob).get("/api/realtime/calls").status_code == 200


@pytest.mark.django_db
def test_it_throttles_anonymous_clients_by_address(settings, api):
    settings.REALTIME_LOCAL_MODE = True
    settings.REALTIME_THROTTLE_RATES = {"api_key": "100/min", "anonymous": "2/min", "staff": "100/min"}

    answers = [api.get("/api/realtime/stats", REMOTE_ADDR="127.0.0.1").status_code for _ in range(2)]
    throttled = api.get("/api/realtime/stats", REMOTE_ADDR="127.0.0.1")
    # A forged X-Forwarded-For must not open a fresh bucket (no proxy is trusted by default).
    forged = api.get("/api/realtime/stats", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    other = api.get("/api/realtime/stats", REMOTE_ADDR="127.0.0.2")

    assert answers == [200, 200]
    _assert_throttled(throttled)
    _assert_throttled(forged)
    assert other.status_code == 200


@pytest.mark.django_db
def test_it_trusts_the_configured_number_of_proxies(settings, api):
    settings.REALTIME_LOCAL_MODE = True
    settings.REALTIME_THROTTLE_RATES = {"api_key": None, "anonymous": "1/min", "staff": None}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}

    first = api.get("/api/realtime/stats", HTTP_X_FORWARDED_FOR="198.51.100.7")
    same_client = api.get("/api/realtime/stats", HTTP_X_FORWARDED_FOR="198.51.100.7")
    other_client = api.get("/api/realtime/stats", HTTP_X_FORWARDED_FOR="198.51.100.8")

    assert first.status_code == 200
    _assert_throttled(same_client)
    assert other_client.status_code == 200


@pytest.mark.django_db
def test_it_throttles_staff_users(settings, django_user_model):
    settings.REALTIME_LOCAL_MODE = False
    settings.REALTIME_THROTTLE_RATES = {"api_key": None, "anonymous": None, "staff": "1/min"}
    client = APIClient()
    client.force_login(django_user_model.objects.create_superuser("boss", "boss@example.test", "pw"))

    assert client.get("/api/realtime/calls").status_code == 200
    _assert_throttled(client.get("/api/realtime/calls"))


@pytest.mark.django_db
def test_it_changes_nothing_when_it_throttles(settings, make_key, make_call):
    settings.REALTIME_LOCAL_MODE = False
    settings.REALTIME_THROTTLE_RATES = {"api_key": "1/min", "anonymous": None, "staff": None}
    key, raw = make_key()
    call = make_call(api_key=key)
    _key_client(raw).get("/api/realtime/stats")

    _assert_throttled(_key_client(raw).delete(f"/api/realtime/calls/{call.call_id}"))

    call.refresh_from_db()
    assert call.status == Call.Status.PENDING
    assert call.events.count() == 1


@pytest.mark.django_db
def test_it_does_not_throttle_when_no_rate_is_set(settings, api):
    settings.REALTIME_LOCAL_MODE = True
    settings.REALTIME_THROTTLE_RATES = {"api_key": None, "anonymous": None, "staff": None}

    assert {api.get("/api/realtime/stats").status_code for _ in range(30)} == {200}
