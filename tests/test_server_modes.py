"""Both modes through the real ASGI server (uvicorn), where the client address comes from the socket."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from realtime.models import Call

from .conftest import Server, start_server, stop_server

SEED_SESSION = {
    "model": "gpt-4o-realtime-preview",
    "modalities": ["text", "audio"],
    "voice": "alloy",
    "instructions": "Tu es un assistant vocal utile.",
}


@pytest.mark.django_db(transaction=True)
def test_it_runs_the_seeds_examples_anonymously_in_local_mode(asgi_server, sdp_offer):
    created = httpx.post(f"{asgi_server.url}/api/realtime/calls", json={"sdp": sdp_offer, "session": SEED_SESSION}, timeout=30)
    call_id = created.json()["call_id"]
    ended = httpx.delete(f"{asgi_server.url}/api/realtime/calls/{call_id}", timeout=30)

    assert created.status_code == 201
    assert ended.status_code == 200 and ended.json()["call"]["status"] == "ended"
    assert Call.objects.get(call_id=call_id).status == Call.Status.ENDED


@pytest.fixture
def production_server(django_db_setup: None, tmp_path) -> Iterator[Server]:
    server = start_server(
        tmp_path,
        extra_env={
            "DEBUG": "false",
            "SECRET_KEY": "tests-production-mode-" + "s3Kr1t" * 8,
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "LOCALREALTIME_API_KEY": "sk-local-private-for-this-test",
        },
    )
    yield server
    stop_server(server)


@pytest.mark.django_db(transaction=True)
def test_it_wants_credentials_from_everyone_in_production_mode(production_server, sdp_offer, make_key):
    _key, raw = make_key("prod")
    url = f"{production_server.url}/api/realtime/calls"

    anonymous = httpx.post(url, json={"sdp": sdp_offer}, timeout=30)
    with_key = httpx.get(url, headers={"Authorization": f"Bearer {raw}"}, timeout=30)

    # It should refuse loopback too: only local mode lets anonymous loopback requests in.
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    assert with_key.status_code == 200
    assert not Call.objects.exists()
