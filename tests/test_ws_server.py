"""The WebSocket feed through the real ASGI server (uvicorn) with a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from localrealtime.caller import Caller
from realtime.models import Call


async def _next(socket: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(socket.recv(), timeout=10))


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_pushes_a_rest_created_and_ended_call_to_a_real_websocket_client(asgi_server):
    ws_url = asgi_server.url.replace("http://", "ws://")
    caller = Caller()
    async with (
        websockets.connect(f"{ws_url}/ws/realtime/calls", origin=asgi_server.url, open_timeout=10) as feed,
        httpx.AsyncClient(base_url=asgi_server.url, timeout=15) as http,
    ):
        try:
            created = await http.post("/api/realtime/calls", json={"sdp": await caller.offer(), "session": {"voice": "shimmer"}})
            assert created.status_code == 201
            call_id = created.json()["call_id"]
            async with websockets.connect(f"{ws_url}/ws/realtime/calls/{call_id}", origin=asgi_server.url, open_timeout=10) as one:
                ended = await http.delete(f"/api/realtime/calls/{call_id}")
                assert ended.status_code == 200
                # The call's own feed: its end, then the upstream hangup's confirmation.
                assert [(await _next(one))["event"]["event_type"] for _ in range(2)] == ["call.ended", "upstream.hangup"]
        finally:
            await caller.close()

        # The list feed: one push per transition (created, answered, ended), statistics after them.
        received = [await _next(feed)]
        while not (received[-1]["type"] == "stats.changed" and received[-1]["stats"]["ended_calls"] == 1):
            received.append(await _next(feed))
        pushed = [m for m in received if m["type"] == "call.changed"]
        stats = [m["stats"] for m in received if m["type"] == "stats.changed"]

    assert [(p["type"], p["event"]["event_type"], p["call"]["status"]) for p in pushed] == [
        ("call.changed", "call.created", "pending"),
        ("call.changed", "call.answered", "active"),
        ("call.changed", "call.ended", "ended"),
    ]
    assert {p["call"]["call_id"] for p in pushed} == {call_id}
    assert received[-1]["type"] == "stats.changed" and stats[-1]["ended_calls"] == 1
    assert await Call.objects.filter(call_id=call_id).values_list("status", flat=True).aget() == "ended"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_refuses_a_real_websocket_from_another_site(asgi_server):
    ws_url = asgi_server.url.replace("http://", "ws://")
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(f"{ws_url}/ws/realtime/calls", origin="http://evil.example", open_timeout=10):
            pass
    assert refused.value.response.status_code == 403
