"""A call ended while OpenAI is still answering is never left running upstream."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from realtime.models import Call, CallEvent

from .polling import wait_until


@pytest.mark.django_db(transaction=True)
def test_a_delete_during_setup_ends_the_call_and_hangs_up_what_upstream_created(asgi_server, sdp_offer):
    asgi_server.engine("POST", "faults", json={"op": "create", "delay_ms": 1500})

    async def race() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=asgi_server.url, timeout=30) as http:
            creating = asyncio.ensure_future(http.post("/api/realtime/calls", json={"sdp": sdp_offer}))
            await wait_until(Call.objects.filter(status="pending").exists, every=0.05)
            call_id = await asyncio.to_thread(lambda: Call.objects.get().call_id)
            ended = await http.delete(f"/api/realtime/calls/{call_id}")
            return await creating, ended

    created, ended = asyncio.run(race())

    assert ended.status_code == 200
    assert created.status_code == 409
    assert created.json()["error"]["code"] == "call_not_active"
    call = Call.objects.get()
    assert (call.status, call.answered_at) == (Call.Status.ENDED, None)
    assert list(call.events.values_list("event_type", flat=True)) == ["call.created", "call.ended", "upstream.hangup"]
    upstream_id = CallEvent.objects.get(call=call, event_type="upstream.hangup").data["upstream_id"]
    assert asgi_server.engine("GET", f"calls/{upstream_id}").json()["closed_reason"] == "hangup"
