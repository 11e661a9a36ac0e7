"""REALTIME_MAX_ACTIVE_CALLS (in all, and per API key): over the limit, POST answers 429 and nothing
is sent upstream; enforced atomically, so 100 racing creates with a limit of 10 make exactly 10 calls."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from rest_framework.test import APIClient

from realtime.models import ApiKey, Call, CallEvent

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


def _key_client(make_key, name: str, **fields) -> tuple[ApiKey, APIClient]:
    key, raw = make_key(name, **fields)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return key, client


@pytest.mark.django_db(transaction=True)
def test_it_limits_a_key_by_its_own_field_over_the_default(sdp_offer, asgi_server, settings, make_key, make_call):
    settings.REALTIME_LOCAL_MODE = False
    settings.REALTIME_MAX_ACTIVE_CALLS_PER_KEY = 5
    small, small_client = _key_client(make_key, "small", max_active_calls=1)
    unlimited, unlimited_client = _key_client(make_key, "unlimited", max_active_calls=0)
    make_call(api_key=small)
    for _ in range(5):
        make_call(api_key=unlimited)

    refused = _post(small_client, sdp_offer)

    assert refused.status_code == 429
    assert refused.json()["error"]["details"] == {"limit": 1, "scope": "api_key"}
    # 0: no limit of its own, whatever the default.
    assert _post(unlimited_client, sdp_offer).status_code == 201


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_fair_share_of_the_global_cap_for_keys_with_none_in_use(sdp_offer, asgi_server, settings, make_key, make_call):
    settings.REALTIME_LOCAL_MODE = False
    settings.REALTIME_MAX_ACTIVE_CALLS, settings.REALTIME_RESERVED_CALLS = 10, 2
    greedy, greedy_client = _key_client(make_key, "greedy")
    for _ in range(8):
        make_call(api_key=greedy)
    sent = _creates(asgi_server)

    refused = _post(greedy_client, sdp_offer)

    assert refused.status_code == 429
    assert refused.json()["error"]["details"] == {"limit": 10, "reserved": 2, "scope": "fair_share"}
    assert _creates(asgi_server) == sent and Call.objects.count() == 8
    # Keys with no call in progress still find a place, up to the global cap.
    _bob, bob_client = _key_client(make_key, "bob")
    _carol, carol_client = _key_client(make_key, "carol")
    _dave, dave_client = _key_client(make_key, "dave")
    assert _post(bob_client, sdp_offer).status_code == 201
    assert _post(carol_client, sdp_offer).status_code == 201
    last = _post(dave_client, sdp_offer)
    assert (last.status_code, last.json()["error"]["details"]) == (429, {"limit": 10})
