"""End to end through the real ASGI server: an aiortc caller, our API, the embedded engine's WebRTC peer."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from localrealtime.caller import Caller
from realtime.models import Call


@pytest.mark.django_db(transaction=True)
def test_it_connects_a_real_webrtc_call_echoes_audio_and_ends_it(asgi_server):
    async def scenario() -> dict:
        caller = Caller(script=[(0.5, 0.3), (2.0, 0.0)], loop_script=True)
        try:
            async with httpx.AsyncClient(base_url=asgi_server.url, timeout=30) as http:
                created = await http.post(
                    "/api/realtime/calls",
                    json={"sdp": await caller.offer(), "session": {"model": "gpt-4o-realtime-preview", "voice": "alloy"}},
                )
                assert created.status_code == 201, created.text
                call_id = created.json()["call_id"]
                await caller.accept(created.json()["sdp_answer"])

                await asyncio.wait_for(caller.connected.wait(), 15)
                # It should answer each turn with its own audio over real RTP (an echo of the turn).
                await caller.wait_for(lambda: caller.loud_frames_received >= 25, within=15)
                # The oai-events channel carries the GA session.
                await caller.wait_for(lambda: caller.events, within=10)

                ended = await http.delete(f"/api/realtime/calls/{call_id}")
                assert ended.status_code == 200
                # The upstream peer closes: the caller's connection drops.
                await caller.wait_for(
                    lambda: caller.pc.connectionState in ("closed", "failed") or caller.channel.readyState == "closed", 15
                )
            return {"call_id": call_id, "first_event": caller.events[0]}
        finally:
            await caller.close()

    result = asyncio.run(scenario())

    assert result["first_event"]["type"] == "session.created"
    assert result["first_event"]["session"]["model"] == "gpt-realtime-2.1"
    assert result["first_event"]["session"]["audio"]["output"]["voice"] == "alloy"
    call = Call.objects.get(call_id=result["call_id"])
    assert (call.status, call.end_reason) == (Call.Status.ENDED, Call.EndReason.API_HANGUP)
    engine_side = asgi_server.engine("GET", f"calls/{call.upstream_id}").json()
    assert engine_side["closed_reason"] == "hangup"
    assert engine_side["connection_state"] == "closed"
