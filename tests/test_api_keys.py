"""API keys on the REST API: a key sees and ends only its own calls; bad keys are refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from realtime.auth.principals import key_for
from realtime.models import ApiKey, Call, CallEvent, hash_api_key


def _client(raw: str, **extra: str) -> APIClient:
    client = APIClient(**extra)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture(autouse=True)
def _production(settings):
    # Keys must work on their own, without the local-mode allowance for loopback.
    settings.REALTIME_LOCAL_MODE = False


@pytest.mark.django_db
def test_it_stores_only_a_hash_and_a_visible_prefix(make_key):
    key, raw = make_key("standard")

    stored = ApiKey.objects.get(pk=key.pk)
    assert raw.startswith("iap_") and len(raw) >= 40
    assert stored.prefix == raw[:12]
    assert stored.key_hash == hash_api_key(raw)
    # It should keep nothing from which the key can be read back.
    assert raw not in {getattr(stored, f.attname) for f in ApiKey._meta.fields if isinstance(getattr(stored, f.attname), str)}


@pytest.mark.django_db
def test_it_lists_only_the_keys_own_calls(make_key, make_call):
    alice, alice_raw = make_key("alice")
    bob, _bob_raw = make_key("bob")
    own = make_call(api_key=alice)
    make_call(api_key=bob)
    make_call()

    response = _client(alice_raw).get("/api/realtime/calls")

    assert response.status_code == 200
    assert [c["call_id"] for c in response.json()["data"]] == [own.call_id]
    assert response.json()["count"] == 1


@pytest.mark.django_db
def test_it_scopes_stats_to_the_key(make_key, make_call):
    alice, alice_raw = make_key("alice")
    make_call(api_key=alice)
    make_call()
    make_call()

    stats = _client(alice_raw).get("/api/realtime/stats").json()["stats"]

    assert stats["total_calls"] == 1
    assert stats["total_events"] == 1
    assert stats["calls_by_model"] == {"gpt-realtime-2.1": 1}


@pytest.mark.parametrize(("method", "suffix"), [("get", ""), ("get", "/events"), ("get", "/transcript"), ("delete", "")])
@pytest.mark.django_db
def test_it_answers_404_for_another_keys_call(make_key, make_call, method, suffix):
    _alice, alice_raw = make_key("alice")
    bob, _ = make_key("bob")
    bobs_call = make_call(api_key=bob)

    response = getattr(_client(alice_raw), method)(f"/api/realtime/calls/{bobs_call.call_id}{suffix}")

    # It should look exactly like an unknown id: ids of other integrators' calls do not leak.
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "call_not_found"
    bobs_call.refresh_from_db()
    assert bobs_call.status == Call.Status.PENDING
    assert list(bobs_call.events.values_list("event_type", flat=True)) == ["call.created"]


@pytest.mark.django_db
def test_it_ends_the_keys_own_call_and_records_which_key(make_key, make_call, pushes, django_capture_on_commit_callbacks):
    key, raw = make_key("alice")
    call = make_call(api_key=key)

    with django_capture_on_commit_callbacks(execute=True):
        response = _client(raw).delete(f"/api/realtime/calls/{call.call_id}")

    assert response.status_code == 200
    call.refresh_from_db()
    assert call.status == Call.Status.ENDED
    assert call.end_reason == Call.EndReason.API_HANGUP
    ended = CallEvent.objects.get(call=call, event_type="call.ended")
    assert ended.actor == CallEvent.Actor.API
    assert ended.data["api_key"] == key.prefix
    assert [p["event"]["event_type"] for p in pushes] == ["call.ended"]


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_records_the_key_that_created_a_call(make_key, sdp_offer):
    key, raw = make_key("alice")

    response = _client(raw).post("/api/realtime/calls", {"sdp": sdp_offer, "session": {"voice": "echo"}}, format="json")

    assert response.status_code == 201
    call = Call.objects.get(call_id=response.json()["call_id"])
    assert call.api_key == key
    assert call.status == Call.Status.ACTIVE
    assert CallEvent.objects.get(call=call, event_type="call.created").data["api_key"] == key.prefix


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"revoked_at": timezone.now() - timedelta(seconds=1)}, "revoked"),
        ({"expires_at": timezone.now() - timedelta(seconds=1)}, "expired"),
    ],
)
@pytest.mark.django_db
def test_it_refuses_revoked_and_expired_keys(make_key, make_call, change, message):
    key, raw = make_key("alice")
    make_call(api_key=key)
    ApiKey.objects.filter(pk=key.pk).update(**change)

    response = _client(raw).get("/api/realtime/calls")

    assert response.status_code == 401
    assert response.json()["success"] is False
    assert response.json()["error"]["code"] == "authentication_failed"
    assert message in response.json()["error"]["message"]
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer iap_" + "x" * 43, "Bearer ", "Bearer iap_" + "x" * 500])
@pytest.mark.django_db
def test_it_refuses_unknown_keys(header, settings):
    # Even in local mode and from loopback: a client that sends a key means to use it.
    settings.REALTIME_LOCAL_MODE = True
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/api/realtime/calls")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


@pytest.mark.django_db
def test_it_notes_when_a_key_was_last_used(make_key):
    key, raw = make_key("alice")
    assert key.last_used_at is None

    _client(raw).get("/api/realtime/calls")

    key.refresh_from_db()
    assert key.last_used_at is not None
    assert timezone.now() - key.last_used_at < timedelta(minutes=1)


@pytest.mark.django_db
def test_it_reads_a_key_as_the_orm_does(make_key, django_user_model):
    owner = django_user_model.objects.create(username="owner")
    key, raw = make_key("crm")
    ApiKey.objects.filter(pk=key.pk).update(
        owner=owner, expires_at=timezone.now() + timedelta(days=3), last_used_at=timezone.now(), max_active_calls=4
    )

    found = key_for(raw)

    stored = ApiKey.objects.get(pk=key.pk)
    fields = [field.attname for field in ApiKey._meta.concrete_fields]
    assert [getattr(found, name) for name in fields] == [getattr(stored, name) for name in fields]
    assert found.expires_at is not None and found.expires_at.tzinfo is not None
    assert found._state.adding is False


@pytest.mark.django_db
def test_it_keeps_a_key_to_itself_even_when_its_owner_is_staff(make_key, make_call, django_user_model):
    boss = django_user_model.objects.create_superuser("boss", "boss@example.test", "pw")
    _key, raw = make_key("boss's script", owner=boss)
    make_call()

    response = _client(raw).get("/api/realtime/calls")

    assert response.json()["count"] == 0
