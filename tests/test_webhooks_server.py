"""End to end, on the real ASGI server (`manage.py serve`, its background work embedded): an
endpoint registered through the API hears a real call's lifecycle, signed, from the dispatcher
running on the server's own event loop. Needs real servers (`manage.py serve`, the local engine)."""

from __future__ import annotations

import json

import httpx
import pytest
import standardwebhooks

from .conftest import start_server, stop_server
from .polling import wait_until
from .webhook_receiver import receiving


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_delivers_a_real_calls_lifecycle_from_the_server(sdp_offer, tmp_path):
    server = start_server(tmp_path, extra_env={"REALTIME_MONITORS": "embedded", "REALTIME_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"})
    try:
        with receiving() as receiver:
            async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
                created = await client.post(
                    "/api/realtime/webhooks", json={"url": receiver.url, "events": ["call.created", "call.answered", "call.ended"]}
                )
                assert created.status_code == 201, created.text
                secret = created.json()["webhook"]["secret"]
                call = await client.post("/api/realtime/calls", json={"sdp": sdp_offer})
                assert call.status_code == 201, call.text
                call_id = call.json()["call_id"]
                assert (await client.delete(f"/api/realtime/calls/{call_id}")).status_code == 200

            await wait_until(lambda: len(receiver.received) >= 3)

            types = [json.loads(r.body)["type"] for r in receiver.received]
            assert sorted(types) == ["call.answered", "call.created", "call.ended"]
            for got in receiver.received:
                body = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
                assert body["data"]["call_id"] == call_id
            ended = receiver.of_type("call.ended")[0]
            assert json.loads(ended.body)["data"]["status"] == "ended"
            assert len({r.headers["webhook-id"] for r in receiver.received}) == 3
    finally:
        stop_server(server)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_delivers_after_a_restart_what_a_killed_server_had_committed(sdp_offer, tmp_path):
    # The first server does no background work: the deliveries of its call's events stay in the
    # outbox when it is killed (SIGKILL); the next server, restarted in its place, sends them.
    env = {"REALTIME_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}
    first = start_server(tmp_path, extra_env={**env, "REALTIME_MONITORS": "off"})
    second = None
    try:
        with receiving() as receiver:
            async with httpx.AsyncClient(base_url=first.url, timeout=20) as client:
                created = await client.post("/api/realtime/webhooks", json={"url": receiver.url, "events": ["call.created", "call.ended"]})
                secret = created.json()["webhook"]["secret"]
                call_id = (await client.post("/api/realtime/calls", json={"sdp": sdp_offer})).json()["call_id"]
                assert (await client.delete(f"/api/realtime/calls/{call_id}")).status_code == 200
            first.process.kill()
            first.process.wait(10)
            assert receiver.received == []

            second = start_server(tmp_path, extra_env={**env, "REALTIME_MONITORS": "embedded"}, like=first)
            await wait_until(lambda: len(receiver.received) >= 2)

            bodies = [standardwebhooks.Webhook(secret).verify(r.body, r.headers) for r in receiver.received]
            assert sorted(b["type"] for b in bodies) == ["call.created", "call.ended"]
            assert {b["data"]["call_id"] for b in bodies} == {call_id}
    finally:
        stop_server(first)
        if second is not None:
            stop_server(second)
