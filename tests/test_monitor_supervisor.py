"""The monitor supervisor's rhythm: it claims new calls every REALTIME_MONITOR_CLAIM_SECONDS and
renews its leases every third of a lease (real supervisor, real database; the upstream is a
closed port, so each claimed call's monitor keeps trying to join its sideband meanwhile)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from realtime import monitor, services, upstream
from realtime.models import Call
from realtime.sessions import parse_session

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answered_call(upstream_id: str) -> Call:
    call = services.call_open(offer="v=0", session=parse_session({}), source="webrtc", actor="api")
    services.call_answer(call=call, created=upstream.CreatedCall(upstream_id=upstream_id, sdp_answer="v=0"))
    return call


def _lease(call: Call) -> tuple[str, Any]:
    return Call.objects.filter(pk=call.pk).values_list("monitor_owner", "monitor_lease_until").get()


async def _until(check: Any, within: float) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_it_claims_a_new_call_at_the_next_claim_not_a_third_of_a_lease_later(settings):
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{_closed_port()}/v1"
    settings.REALTIME_MONITOR_LEASE_SECONDS = 30.0  # renewals every 10 s: none in this test
    settings.REALTIME_MONITOR_CLAIM_SECONDS = 0.1
    supervisor, stop = monitor.Supervisor(owner="sup-test"), asyncio.Event()
    running = asyncio.ensure_future(supervisor.run(stop))
    try:
        await asyncio.sleep(0.3)  # its first ticks: nothing to claim yet
        call = await sync_to_async(_answered_call)("rtc_claimed_soon")

        async def claimed() -> bool:
            return (await sync_to_async(_lease)(call))[0] == "sup-test"

        assert await _until(claimed, within=3.0), "not claimed within 3 s (a third of the lease is 10 s)"
        owner, lease = await sync_to_async(_lease)(call)
        await asyncio.sleep(0.5)  # several more claim ticks: the lease is not renewed at each
        assert await sync_to_async(_lease)(call) == (owner, lease)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)
    # A clean stop gives the call back for another monitor: its lease ends at the stop.
    owner, lease = await sync_to_async(_lease)(call)
    assert owner == "" and lease is not None and lease <= timezone.now()


async def test_it_claims_calls_with_one_update_each_and_reads_them_together():
    calls = [await sync_to_async(_answered_call)(f"rtc_claimed_{i}") for i in range(3)]

    def claim() -> tuple[list[services.Claimed], list[str]]:
        with CaptureQueriesContext(connection) as queries:
            claimed = services.monitor_claim(owner="host:1:abc", lease_seconds=10, limit=10)
        return claimed, [query["sql"] for query in queries.captured_queries]

    claimed, statements = await sync_to_async(claim)()

    assert [(c.call.pk, c.previous_owner, c.watched_before) for c in claimed] == [(call.pk, "", False) for call in calls]
    selects = [sql for sql in statements if sql.startswith("SELECT")]
    # The free calls, the three won in one read (without the offer), then the expired leases (none).
    assert len(selects) == 3 and len([sql for sql in statements if sql.startswith("UPDATE")]) == 3
    assert '"id" IN' in selects[1] and "sdp_offer" not in selects[1]
    assert {await sync_to_async(_lease)(call) for call in calls} == {(claimed[0].call.monitor_owner, claimed[0].call.monitor_lease_until)}


async def test_it_tells_a_call_never_watched_from_one_given_back_or_left_by_a_dead_monitor():
    fresh, released, orphaned = [await sync_to_async(_answered_call)(f"rtc_watched_{i}") for i in range(3)]

    def hand_over() -> list[tuple[int, str, bool]]:
        services.monitor_claim(owner="host:1:old", lease_seconds=10, limit=2)  # the first two
        services.monitor_release(owner="host:1:old", call_ids=[released.pk])
        # The third was held by a monitor whose process died: its lease ran out.
        Call.objects.filter(pk=orphaned.pk).update(monitor_owner="host:2:dead", monitor_lease_until=timezone.now())
        Call.objects.filter(pk=fresh.pk).update(monitor_owner="", monitor_lease_until=None)  # never held
        return [
            (c.call.pk, c.previous_owner, c.watched_before) for c in services.monitor_claim(owner="host:3:new", lease_seconds=10, limit=10)
        ]

    assert sorted(await sync_to_async(hand_over)()) == sorted(
        [(fresh.pk, "", False), (released.pk, "", True), (orphaned.pk, "host:2:dead", True)]
    )


@pytest.mark.parametrize("watched_before", [False, True])
async def test_it_reads_back_stored_events_only_for_a_call_watched_before(settings, monkeypatch, watched_before):
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{_closed_port()}/v1"
    settings.REALTIME_MONITOR_CLAIM_SECONDS = 0.05
    call = await sync_to_async(_answered_call)("rtc_resume")
    if watched_before:
        await sync_to_async(services.monitor_claim)(owner="host:1:old", lease_seconds=10, limit=1)
        await sync_to_async(services.monitor_release)(owner="host:1:old", call_ids=[call.pk])
    resumed: list[int] = []
    monkeypatch.setattr(monitor.CallMonitor, "_resume_meter", lambda self: resumed.append(self.call.pk))
    supervisor, stop = monitor.Supervisor(owner="sup-test"), asyncio.Event()
    running = asyncio.ensure_future(supervisor.run(stop))
    try:

        async def claimed() -> bool:
            return (await sync_to_async(_lease)(call))[0] == "sup-test"

        assert await _until(claimed, within=3.0)
        await asyncio.sleep(0.2)  # the monitor has started (and keeps trying the closed port)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)
    assert resumed == ([call.pk] if watched_before else [])
