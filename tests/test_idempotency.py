"""Idempotency-Key on POST /api/realtime/calls: a retried request gets the first response, never a
second call; the same key with another body is a 409; keys are kept for 24 hours."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from realtime import idempotency
from realtime.auth.principals import LOCAL
from realtime.models import Call, IdempotencyKey
from realtime.sessions import parse_session

from .factories import make_call


def _post(api, offer: str, key: str, session: dict | None = None):
    return api.post("/api/realtime/calls", {"sdp": offer, "session": session or {"voice": "echo"}}, format="json", HTTP_IDEMPOTENCY_KEY=key)


def _creates(asgi_server) -> int:
    return asgi_server.engine("GET", "stats").json()["requests"]["create"]


@pytest.mark.django_db(transaction=True)
def test_it_returns_the_first_response_to_a_retried_request(api, sdp_offer, asgi_server, pushes):
    first = _post(api, sdp_offer, "order-42")
    sent, pushed = _creates(asgi_server), len(pushes)

    again = _post(api, sdp_offer, "order-42")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    # It should not start a second call: no row, no push, nothing sent upstream.
    assert Call.objects.count() == 1
    assert len(pushes) == pushed and _creates(asgi_server) == sent


@pytest.mark.django_db(transaction=True)
def test_it_refuses_the_same_key_with_another_request(api, sdp_offer, asgi_server):
    _post(api, sdp_offer, "order-42")

    response = _post(api, sdp_offer, "order-42", session={"voice": "alloy"})

    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["details"]["reason"]) == ("idempotency_key_conflict", "different_request")
    assert Call.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_forgets_a_key_after_its_time_to_live(api, sdp_offer, asgi_server, settings):
    first = _post(api, sdp_offer, "order-42")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(seconds=settings.REALTIME_IDEMPOTENCY_TTL_SECONDS + 1))

    again = _post(api, sdp_offer, "order-42")

    assert again.status_code == 201 and again.json()["call_id"] != first.json()["call_id"]
    assert Call.objects.count() == 2 and IdempotencyKey.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_replays_an_upstream_failure_instead_of_trying_again(api, sdp_offer, asgi_server):
    asgi_server.engine("POST", "faults", json={"op": "create", "delay_ms": 2500})
    first = _post(api, sdp_offer, "order-42")  # OpenAI may have started a call: unknown
    sent = _creates(asgi_server)

    again = _post(api, sdp_offer, "order-42")

    assert first.status_code == again.status_code == 504
    assert again.json() == first.json()
    assert Call.objects.get().status == Call.Status.FAILED
    assert _creates(asgi_server) == sent


@pytest.mark.django_db(transaction=True)
def test_it_frees_the_key_when_the_limit_refused_the_request(api, sdp_offer, asgi_server, settings):
    settings.REALTIME_MAX_ACTIVE_CALLS = 1
    busy = make_call(sdp_offer)
    assert _post(api, sdp_offer, "order-42").status_code == 429
    Call.objects.filter(pk=busy.pk).update(status=Call.Status.ENDED)

    # Nothing was recorded under the key, so the retry runs for real.
    assert _post(api, sdp_offer, "order-42").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_it_scopes_keys_to_their_client(sdp_offer, asgi_server, settings, make_key):
    settings.REALTIME_LOCAL_MODE = False
    from rest_framework.test import APIClient

    ids = []
    for name in ("alice", "bob"):
        _key, raw = make_key(name)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        response = _post(client, sdp_offer, "order-42")
        assert response.status_code == 201
        ids.append(response.json()["call_id"])

    assert len(set(ids)) == 2


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", " ", "x" * 256, "clé"])
def test_it_refuses_a_malformed_key(api, sdp_offer, key):
    response = _post(api, sdp_offer, key)

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "Idempotency-Key"
    assert not Call.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_starts_one_call_when_the_same_request_races(sdp_offer, asgi_server):
    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=asgi_server.url, timeout=30) as client:
            headers = {"Idempotency-Key": "order-42"}
            return await asyncio.gather(*(client.post("/api/realtime/calls", json={"sdp": sdp_offer}, headers=headers) for _ in range(5)))

    responses = asyncio.run(race())

    # One request runs; the others get its response, or 409 while it is still running.
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}
    assert len({r.json()["call_id"] for r in responses if r.status_code == 201}) == 1
    assert Call.objects.count() == 1


# --- the service, called directly -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_creates_once_and_replays_through_the_service(sdp_offer, asgi_server):
    session = parse_session({"voice": "echo"})
    create = async_to_sync(idempotency.call_create)

    first = create(principal=LOCAL, offer=sdp_offer, session=session, idempotency_key="order-42")
    again = create(principal=LOCAL, offer=sdp_offer, session=session, idempotency_key="order-42")
    unkeyed = create(principal=LOCAL, offer=sdp_offer, session=session, idempotency_key=None)

    assert (first.status, first.headers) == (201, {})
    assert (again.status, again.body, again.headers) == (201, first.body, {"Idempotent-Replayed": "true"})
    assert unkeyed.status == 201 and unkeyed.body["call_id"] != first.body["call_id"]
    assert Call.objects.count() == 2
    row = IdempotencyKey.objects.get()
    assert (row.scope, row.key, row.response_status, row.response_body) == ("local", "order-42", 201, first.body)


@pytest.mark.django_db
def test_it_forgets_only_the_keys_past_their_time_to_live(settings):
    now = timezone.now()
    ttl = timedelta(seconds=settings.REALTIME_IDEMPOTENCY_TTL_SECONDS)
    IdempotencyKey.objects.create(scope="local", key="old", request_hash="x", created_at=now - ttl - timedelta(seconds=1))
    IdempotencyKey.objects.create(scope="local", key="fresh", request_hash="x", created_at=now - ttl + timedelta(seconds=1))

    assert idempotency.forget_expired(now=now) == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["fresh"]
