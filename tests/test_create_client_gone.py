"""A client that hangs up mid-create (real server, real client): the create runs to its end, a key
never starts two upstream calls, and a call nobody can receive is hung up."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from realtime.models import Call, CallEvent

from .conftest import Server, start_server, stop_server

pytestmark = [pytest.mark.django_db(transaction=True)]

# The engine answers an offer this late: long enough for the client to give up first.
ANSWER_DELAY_MS = 1500


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path, extra_env={"LOCALREALTIME_ANSWER_DELAY_MS": str(ANSWER_DELAY_MS), "REALTIME_THROTTLE_ANONYMOUS": ""})
    yield server
    stop_server(server)


def _give_up_mid_create(server: Server, offer: str, headers: dict[str, str]) -> None:
    """Send a create, wait until it has reached the upstream (the engine counts it, then takes
    ANSWER_DELAY_MS to answer), then close the connection: mid-create whatever the machine's load."""
    before = _creates(server)
    body = json.dumps({"sdp": offer}).encode()
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    lines = ["POST /api/realtime/calls HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{name}: {value}" for name, value in headers.items())]  # fmt: skip
    with socket.create_connection((host, port), timeout=10) as client:
        client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        deadline = time.monotonic() + 15
        while _creates(server) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _creates(server) == before + 1, "the create never reached the upstream"


def _creates(server: Server) -> int:
    return server.engine("GET", "stats").json()["requests"]["create"]


def test_it_finishes_a_keyed_create_after_the_client_left_and_replays_it_once(slow_server, sdp_offer):
    headers = {"Idempotency-Key": "retry-me"}
    _give_up_mid_create(slow_server, sdp_offer, headers)

    deadline = time.monotonic() + 15
    while True:
        retry = httpx.post(f"{slow_server.url}/api/realtime/calls", json={"sdp": sdp_offer}, headers=headers, timeout=15)
        if retry.status_code != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.3)  # the first create is still running: 409 in_progress

    assert retry.status_code == 201, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    call = Call.objects.get()
    assert (call.call_id, call.status) == (retry.json()["call_id"], Call.Status.ACTIVE)
    assert call.upstream_id
    assert _creates(slow_server) == 1


def test_it_hangs_up_a_call_whose_client_left_without_a_key(slow_server, sdp_offer):
    _give_up_mid_create(slow_server, sdp_offer, {})

    deadline = time.monotonic() + 15
    while not Call.objects.filter(status=Call.Status.ENDED).exists() and time.monotonic() < deadline:
        time.sleep(0.2)

    call = Call.objects.get()
    assert (call.status, call.end_reason) == (Call.Status.ENDED, Call.EndReason.API_HANGUP)
    assert call.upstream_id
    ended = CallEvent.objects.get(call=call, event_type="call.ended")
    assert ended.data.get("client_gone") is True
    assert _creates(slow_server) == 1
    deadline = time.monotonic() + 10
    while slow_server.engine("GET", "stats").json()["requests"]["hangup"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert slow_server.engine("GET", "stats").json()["requests"]["hangup"] == 1
