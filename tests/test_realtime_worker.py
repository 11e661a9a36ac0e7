"""`manage.py realtime_worker`: real worker processes share the active calls through database leases,
and when one is killed (SIGKILL, mid-call) another takes its calls over with no event lost or
recorded twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from localrealtime.caller import Caller, QueuedAudioTrack
from realtime.models import Call, CallEvent
from realtime.monitor import SKIPPED
from tests.conftest import ROOT, database_url
from tests.polling import wait_until


def _start_worker(server: Any, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "iaposte.settings",
        "DEBUG": "true",
        "SECRET_KEY": "tests-only-not-secret",
        "DATABASE_URL": database_url(),
        "OPENAI_API_KEY": "",
        "OPENAI_BASE_URL": server.engine_url,
        "REALTIME_MONITORS": "worker",
        "REALTIME_MONITOR_LEASE_SECONDS": "2",
        "REALTIME_MONITOR_FLUSH_MS": "50",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "realtime_worker"], cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def _count(call: Call, event_type: str) -> int:
    return CallEvent.objects.filter(call=call, event_type=event_type).count()


def _owner(call: Call) -> str:
    return Call.objects.filter(pk=call.pk).values_list("monitor_owner", flat=True).get()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_takes_over_the_calls_of_a_killed_worker_without_losing_or_repeating_events(asgi_server, api, tmp_path):
    first = _start_worker(asgi_server, tmp_path / "worker-1.log")
    second: subprocess.Popen[bytes] | None = None
    track = QueuedAudioTrack()
    caller = Caller(audio=track)
    try:
        response = await sync_to_async(api.post)("/api/realtime/calls", {"sdp": await caller.offer()}, format="json")
        assert response.status_code == 201
        await caller.accept(response.json()["sdp_answer"])
        call = await sync_to_async(Call.objects.get)(call_id=response.json()["call_id"])
        # The first worker claims the call (the second is not running yet, so it is the one).
        await wait_until(lambda: _count(call, "session.created") == 1, within=30)
        assert f":{first.pid}:" in await sync_to_async(_owner)(call)
        second = _start_worker(asgi_server, tmp_path / "worker-2.log")

        await caller.wait_for(lambda: caller.connected.is_set(), within=20)
        track.tone(1.0)
        # The turn ends with rate_limits.updated: once it is stored, everything before it is.
        await wait_until(lambda: _count(call, "rate_limits.updated") == 1)

        # While its holder lives and renews its lease, the other worker leaves the call alone.
        assert f":{first.pid}:" in await sync_to_async(_owner)(call)
        assert await sync_to_async(_count)(call, "session.created") == 1
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # It should be taken over by the other worker within seconds (a 2 s lease here).
        await wait_until(lambda: f":{second.pid}:" in _owner(call) and _count(call, "session.created") == 2, within=20)
        track.tone(1.0)
        await wait_until(lambda: _count(call, "rate_limits.updated") == 2)

        await caller.close()
        await wait_until(lambda: Call.objects.filter(pk=call.pk, status=Call.Status.ENDED).exists())
        await asyncio.sleep(0.5)  # let a (wrong) second end show up if there were one

        # It should have stored every event the engine sent on a sideband, once each.
        sent = (await sync_to_async(asgi_server.engine)("GET", f"calls/{call.upstream_id}")).json()["sideband_events"]
        expected = {event_id for event_id, kind in sent if kind not in SKIPPED and not kind.endswith(".delta")}
        stored = await sync_to_async(list)(
            CallEvent.objects.filter(call=call).exclude(upstream_event_id="").values_list("upstream_event_id", flat=True)
        )
        assert len(stored) == len(set(stored))
        assert set(stored) == expected
        assert await sync_to_async(_count)(call, "response.done") == 2
        assert await sync_to_async(_count)(call, "call.ended") == 1
        call = await sync_to_async(Call.objects.get)(pk=call.pk)
        assert call.end_reason == Call.EndReason.REMOTE_HANGUP
        assert call.usage["responses"] == 2
    finally:
        await caller.close()
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
                try:
                    worker.wait(10)
                except subprocess.TimeoutExpired:
                    worker.kill()
    # It should stop cleanly on SIGTERM.
    assert second is not None and second.returncode == 0, (tmp_path / "worker-2.log").read_text()[-2000:]
