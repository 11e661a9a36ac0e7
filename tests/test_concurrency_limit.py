"""REALTIME_MAX_ACTIVE_CALLS (in all, and per API key): over the limit, POST answers 429 and nothing
is sent upstream; enforced atomically, so 100 racing creates with a limit of 10 make exactly 10 calls."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from rest_framework.test import APIClient

from realtime.models import Call, CallEvent

from .conftest import start_server, stop_server
from .factories import end_call, make_call


def _creates(asgi_server) -> int:
    return asgi_server.engine("GET", "stats").json()["requests"]["create"]


def _post(client: APIClient, offer: str):
    return client.post("/api/realtime/calls", {"sdp": offer}, format="json")


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_call_over_the_global_limit_without_asking_upstream(api, sdp_offer, asgi_server, settings, pushes):
    settings.REALTIME_MAX_ACTIVE_CALLS = 2
    first, _second = make_call(sdp_offer), make_call(sdp_offer)
    sent, pushes_before = _creates(asgi_server), len(pushes)

    response = _post(api, sdp_offer)

    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["code"], error["details"]) == ("too_many_active_calls", {"limit": 2})
    # It should record nothing, push nothing and send nothing upstream.
    assert Call.objects.count() == 2 and CallEvent.objects.filter(event_type="call.created").count() == 2
    assert len(pushes) == pushes_before
    assert _creates(asgi_server) == sent

    # An ended call frees its place.
    end_call(first)
    assert _post(api, sdp_offer).status_code == 201


@pytest.mark.django_db(transaction=True)
def test_it_limits_each_api_key_on_its_own(sdp_offer, asgi_server, settings, make_key):
    settings.REALTIME_LOCAL_MODE = False
    settings.REALTIME_MAX_ACTIVE_CALLS_PER_KEY = 1
    clients = {}
    for name in ("alice", "bob"):
        _key, raw = make_key(name)
        clients[name] = APIClient()
        clients[name].credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert _post(clients["alice"], sdp_offer).status_code == 201
    sent = _creates(asgi_server)

    refused = _post(clients["alice"], sdp_offer)

    assert refused.status_code == 429
    assert refused.json()["error"]["details"] == {"limit": 1, "scope": "api_key"}
    assert _creates(asgi_server) == sent
    # Another key has its own allowance.
    assert _post(clients["bob"], sdp_offer).status_code == 201
    assert Call.objects.filter(status=Call.Status.ACTIVE).count() == 2


@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_the_limit_through_when_100_creates_race(sdp_offer, tmp_path):
    # Two server processes sharing the database, as when scaled: the limit holds across processes,
    # not only within one process's thread.
    env = {"REALTIME_MAX_ACTIVE_CALLS": "10", "REALTIME_THROTTLE_ANONYMOUS": ""}
    servers = [start_server(tmp_path, extra_env=env)]
    try:
        servers.append(start_server(tmp_path, extra_env=env))

        async def race() -> list[int]:
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                requests = (client.post(f"{servers[i % 2].url}/api/realtime/calls", json={"sdp": sdp_offer}) for i in range(100))
                responses = await asyncio.gather(*requests)
            return [r.status_code for r in responses]

        statuses = asyncio.run(race())

        assert sorted(set(statuses)) == [201, 429]
        assert statuses.count(201) == 10
        assert Call.objects.count() == 10 and Call.objects.filter(status=Call.Status.ACTIVE).count() == 10
        # It should have asked upstream exactly ten times (each server has its own engine).
        assert sum(s.engine("GET", "stats").json()["requests"]["create"] for s in servers) == 10
    finally:
        for server in servers:
            stop_server(server)
