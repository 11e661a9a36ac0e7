"""`manage.py serve` (uvicorn hosting the site, with monitors, sweeper and engine on its loop) and
`manage.py localrealtime` (the engine alone): started and stopped as real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from deploy import servers
from localrealtime.caller import Caller
from realtime.models import Call, CallEvent

from .conftest import ROOT, _free_port, start_server, stop_server
from .polling import wait_until

# A lease that has not run out when the test looks: a call free again was released, not expired
# (an expired lease keeps its owner until another monitor claims the call).
LONG_LEASE = {"REALTIME_MONITORS": "embedded", "REALTIME_MONITOR_LEASE_SECONDS": "6"}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_stops_within_seconds_on_sigterm_mid_call_releasing_the_lease(tmp_path):
    server = await sync_to_async(start_server)(tmp_path, extra_env=LONG_LEASE)
    caller = Caller()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            response = await client.post("/api/realtime/calls", json={"sdp": await caller.offer()})
        assert response.status_code == 201
        await caller.accept(response.json()["sdp_answer"])
        await caller.wait_for(lambda: caller.connected.is_set(), within=20)
        call_id = response.json()["call_id"]
        # The embedded monitor holds the live call and has joined its sideband.
        await wait_until(lambda: CallEvent.objects.filter(call__call_id=call_id, event_type="session.created").exists())
        assert await sync_to_async(Call.objects.filter(call_id=call_id).exclude(monitor_owner="").exists)()

        server.process.send_signal(signal.SIGTERM)

        # It should exit on its own, promptly (a bound, not a measurement), with a clean log.
        assert server.process.wait(timeout=15) == 0
        log = server.log.read_text()
        assert "Traceback" not in log and " ERROR " not in log, log
        # It should have given the call back for another monitor to re-attach at once: its lease
        # ended at the stop (kept, not cleared: the call was watched, and its events are read back).
        call = await sync_to_async(Call.objects.get)(call_id=call_id)
        assert (call.status, call.monitor_owner) == (Call.Status.ACTIVE, "")
        assert call.monitor_lease_until is not None and call.monitor_lease_until <= timezone.now()
    finally:
        await caller.close()
        if server.process.poll() is None:
            stop_server(server)


@pytest.mark.django_db(transaction=True)
def test_it_freezes_the_start_up_heap_before_accepting_a_connection(tmp_path):
    server = start_server(tmp_path, wait=False)
    port = int(server.url.rsplit(":", 1)[1])
    try:
        deadline = time.monotonic() + 30
        while not servers.port_open(port):
            assert server.process.poll() is None and time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.01)
        # The collection that precedes the freeze holds the loop (2 s on a loaded machine): done
        # before the first connection, not while it waits.
        log = server.log.read_text()
    finally:
        stop_server(server)

    assert "Start-up heap frozen" in log, log


def test_it_serves_the_engine_alone_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    log = tmp_path / "engine.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "localrealtime", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "LOCALREALTIME_SIP_PORT": str(_free_port())},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/_local/stats"
        headers = {"Authorization": f"Bearer {settings.LOCALREALTIME_API_KEY}"}

        def answered() -> httpx.Response | None:
            try:
                return httpx.get(url, headers=headers, timeout=2)
            except httpx.TransportError:
                return None

        response = asyncio.run(wait_until(answered, within=30))

        assert response is not None and response.json() == {
            "requests": dict.fromkeys(("create", "hangup", "accept", "reject", "refer", "sip_invite"), 0),
            "live_calls": 0,
        }
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert "Traceback" not in log.read_text()
        # Its start-up heap frozen, as the web processes' (realtime.heap).
        assert "Start-up heap frozen" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
