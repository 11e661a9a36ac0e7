"""Crash recovery with real processes: `kill -9` the server or a worker with calls in flight, start
it again, and every call still marked live is reconciled within a minute: re-attached to its
sideband if upstream still has it, else ended `lost` (a pending one: `setup_timeout`). Nothing
recorded before the kill is lost."""

from __future__ import annotations

import signal
import subprocess
import threading
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async

from localrealtime.caller import Caller, QueuedAudioTrack
from realtime.models import Call, CallEvent

from .conftest import start_server, stop_server
from .polling import wait_until
from .test_realtime_worker import _start_worker

RECOVERY = {"REALTIME_MONITOR_LEASE_SECONDS": "2", "REALTIME_MONITOR_FLUSH_MS": "50", "REALTIME_SETUP_TIMEOUT_SECONDS": "5"}


def _events(call: Call) -> list[tuple[int, str]]:
    return list(CallEvent.objects.filter(call=call).values_list("id", "event_type"))


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_ends_as_lost_the_calls_a_killed_server_took_with_it(sdp_offer, tmp_path):
    env = {"REALTIME_MONITORS": "embedded", **RECOVERY}
    server = await sync_to_async(start_server)(tmp_path, extra_env=env)
    track = QueuedAudioTrack()
    caller = Caller(audio=track)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            response = await client.post("/api/realtime/calls", json={"sdp": await caller.offer()})
            assert response.status_code == 201
            await caller.accept(response.json()["sdp_answer"])
            talking = await sync_to_async(Call.objects.get)(call_id=response.json()["call_id"])
            silent_response = await client.post("/api/realtime/calls", json={"sdp": sdp_offer})
            silent = await sync_to_async(Call.objects.get)(call_id=silent_response.json()["call_id"])
            await caller.wait_for(lambda: caller.connected.is_set(), within=20)
            track.tone(1.0)
            await wait_until(lambda: CallEvent.objects.filter(call=talking, event_type="rate_limits.updated").exists(), within=20)

        # A create still waiting on upstream when the server dies leaves a pending call.
        await sync_to_async(server.engine)("POST", "faults", json={"op": "create", "delay_ms": 30000})
        threading.Thread(target=_post_quietly, args=(server.url, sdp_offer), daemon=True).start()
        pending = await wait_until(lambda: Call.objects.filter(status=Call.Status.PENDING).first(), within=10)
        before = {call.pk: await sync_to_async(_events)(call) for call in (talking, silent, pending)}

        _kill(server.process)
        await caller.close()
        server = await sync_to_async(start_server)(tmp_path, extra_env=env, like=server)

        # It should reconcile every live call within a minute (a 2 s lease and a 5 s setup timeout here).
        await wait_until(lambda: not Call.objects.filter(status__in=Call.ENDABLE).exists(), within=60)
        for call, reason in ((talking, Call.EndReason.LOST), (silent, Call.EndReason.LOST), (pending, Call.EndReason.SETUP_TIMEOUT)):
            call = await sync_to_async(Call.objects.get)(pk=call.pk)
            assert (call.status, call.end_reason) == (Call.Status.ENDED, reason)
            events = await sync_to_async(_events)(call)
            # Nothing recorded before the kill is lost; the end is recorded once, after it.
            assert events[: len(before[call.pk])] == before[call.pk]
            assert [kind for _, kind in events].count("call.ended") == 1
        ended = await sync_to_async(CallEvent.objects.get)(call=talking, event_type="call.ended")
        assert ended.data["upstream"] == "call_gone" and ended.data["previous_monitor"]
        assert any(kind == "response.done" for _, kind in before[talking.pk])
    finally:
        await caller.close()
        await sync_to_async(stop_server)(server)


def _post_quietly(url: str, offer: str) -> None:
    try:
        httpx.post(f"{url}/api/realtime/calls", json={"sdp": offer}, timeout=60)
    except httpx.HTTPError:
        pass  # the server is killed under it: that is the point


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_re_attaches_the_calls_of_a_killed_worker_once_restarted(asgi_server, api, tmp_path):
    worker = _start_worker(asgi_server, tmp_path / "worker-1.log")
    restarted: subprocess.Popen[bytes] | None = None
    track = QueuedAudioTrack()
    caller = Caller(audio=track)
    try:
        response = await sync_to_async(api.post)("/api/realtime/calls", {"sdp": await caller.offer()}, format="json")
        await caller.accept(response.json()["sdp_answer"])
        call = await sync_to_async(Call.objects.get)(call_id=response.json()["call_id"])
        await wait_until(lambda: CallEvent.objects.filter(call=call, event_type="session.created").count() == 1, within=30)

        _kill(worker)
        restarted = _start_worker(asgi_server, tmp_path / "worker-2.log")

        # It should join the call's sideband again (upstream still has it) and keep recording.
        await wait_until(lambda: CallEvent.objects.filter(call=call, event_type="session.created").count() == 2, within=60)
        await caller.wait_for(lambda: caller.connected.is_set(), within=20)
        track.tone(1.0)
        await wait_until(lambda: CallEvent.objects.filter(call=call, event_type="response.done").exists(), within=20)
        call = await sync_to_async(Call.objects.get)(pk=call.pk)
        assert call.status == Call.Status.ACTIVE and f":{restarted.pid}:" in call.monitor_owner
        engine_side: dict[str, Any] = (await sync_to_async(asgi_server.engine)("GET", f"calls/{call.upstream_id}")).json()
        assert engine_side["sideband_connections"] == 2 and engine_side["closed_reason"] is None
    finally:
        await caller.close()
        for process in (worker, restarted):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_ends_as_lost_the_answered_calls_no_monitor_had_taken_yet(sdp_offer, tmp_path):
    # No monitor runs before the kill, so the answered calls are exactly those "not yet picked up".
    server = await sync_to_async(start_server)(tmp_path, extra_env={"REALTIME_MONITORS": "off", **RECOVERY})
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            responses = [await client.post("/api/realtime/calls", json={"sdp": sdp_offer}) for _ in range(3)]
        assert [r.status_code for r in responses] == [201] * 3
        calls = [await sync_to_async(Call.objects.get)(call_id=r.json()["call_id"]) for r in responses]
        assert {(c.status, c.monitor_owner) for c in calls} == {(Call.Status.ACTIVE, "")}

        _kill(server.process)
        server = await sync_to_async(start_server)(tmp_path, extra_env={"REALTIME_MONITORS": "embedded", **RECOVERY}, like=server)

        await wait_until(lambda: not Call.objects.filter(status__in=Call.ENDABLE).exists(), within=60)
        for call in calls:
            call = await sync_to_async(Call.objects.get)(pk=call.pk)
            # Nobody watched these calls end: `lost`, not a remote hangup.
            assert (call.status, call.end_reason) == (Call.Status.ENDED, Call.EndReason.LOST)
            ended = await sync_to_async(CallEvent.objects.get)(call=call, event_type="call.ended")
            assert ended.data == {
                "reason": "lost",
                "duration_seconds": ended.data["duration_seconds"],
                "upstream": "call_gone",
                "previous_monitor": None,
            }
    finally:
        await sync_to_async(stop_server)(server)
