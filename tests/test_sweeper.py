"""The sweeper ends calls past their limits (max duration, idle, never set up) through the same
services as the API: exactly one call.ended with the reason, one push, and the upstream hangup."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.db.models import F
from django.utils import timezone

from realtime import services, sweeper
from realtime.models import Call, CallEvent
from realtime.sessions import parse_session

from .conftest import start_server, stop_server
from .factories import make_call
from .polling import wait_until


def _age(call: Call, *, seconds: float) -> None:
    # Time travel by moving the call's own clocks back (created, answered, last speech, the
    # deadline set at the answer), not the clock: as if it had all happened `seconds` earlier.
    back = timedelta(seconds=seconds)
    clocks = ("created_at", "answered_at", "last_activity_at", "deadline_at")
    Call.objects.filter(pk=call.pk).update(**{name: F(name) - back for name in clocks})


def _assert_ended_once(call: Call, reason: str, pushes, asgi_server=None) -> CallEvent:
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (Call.Status.ENDED, reason)
    ended = CallEvent.objects.get(call=call, event_type="call.ended")
    assert (ended.actor, ended.data["reason"]) == (CallEvent.Actor.SYSTEM, reason)
    assert [p["event"]["event_type"] for p in pushes if p["call"] is not None] == ["call.ended"]
    if asgi_server is not None:
        assert call.upstream_closed_at is not None
        assert asgi_server.engine("GET", f"calls/{call.upstream_id}").json()["closed_reason"] == "hangup"
    return ended


@pytest.mark.django_db(transaction=True)
def test_it_ends_a_call_at_the_configured_maximum_duration(sdp_offer, asgi_server, settings, pushes):
    settings.REALTIME_MAX_DURATION_SECONDS = 600
    settings.REALTIME_IDLE_TIMEOUT_SECONDS = 0  # off: only the duration counts here
    call = make_call(sdp_offer)
    young = make_call(sdp_offer)
    _age(call, seconds=601)
    _age(young, seconds=590)
    pushes.clear()

    result = async_to_sync(sweeper.sweep_once)()

    assert result.ended == {"max_duration": 1}
    ended = _assert_ended_once(call, Call.EndReason.MAX_DURATION, pushes, asgi_server)
    assert ended.data["limit_seconds"] == 600
    young.refresh_from_db()
    assert young.status == Call.Status.ACTIVE


@pytest.mark.django_db(transaction=True)
def test_it_ends_a_call_at_its_own_maximum_duration(api, sdp_offer, asgi_server, pushes):
    response = api.post("/api/realtime/calls", {"sdp": sdp_offer, "session": {"max_duration_seconds": 30}}, format="json")
    assert response.status_code == 201
    call = Call.objects.get(call_id=response.json()["call_id"])
    # It should keep the limit on the call, note it, and never send it upstream.
    assert call.max_duration_seconds == 30
    assert "max_duration_seconds" not in call.session_upstream
    created = CallEvent.objects.get(call=call, event_type="call.created")
    assert {"field": "max_duration_seconds", "requested": 30, "sent": None, "reason": "enforced_by_broker"} in created.data["adjustments"]
    _age(call, seconds=31)
    pushes.clear()

    async_to_sync(sweeper.sweep_once)()

    ended = _assert_ended_once(call, Call.EndReason.MAX_DURATION, pushes, asgi_server)
    assert ended.data["limit_seconds"] == 30
    assert api.get(f"/api/realtime/calls/{call.call_id}").json()["call"]["end_reason"] == "max_duration"


@pytest.mark.django_db
@pytest.mark.parametrize("value", [0, 1801, "60", 12.5, True])
def test_it_refuses_a_maximum_duration_outside_the_bounds(api, sdp_offer, settings, value):
    settings.REALTIME_MAX_DURATION_SECONDS = 1800

    response = api.post("/api/realtime/calls", {"sdp": sdp_offer, "session": {"max_duration_seconds": value}}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "session.max_duration_seconds"
    assert not Call.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_ends_an_idle_call_and_spares_one_with_recent_speech(sdp_offer, asgi_server, settings, pushes):
    settings.REALTIME_IDLE_TIMEOUT_SECONDS = 60
    idle = make_call(sdp_offer)
    talking = make_call(sdp_offer)
    _age(idle, seconds=61)
    _age(talking, seconds=61)
    # Speech on the sideband moves the talking call's last activity to now.
    speech = services.UpstreamEvent("input_audio_buffer.speech_started", "event_1", {}, timezone.now())
    services.call_record_events(call=talking, events=[speech])
    pushes.clear()

    result = async_to_sync(sweeper.sweep_once)()

    assert result.ended == {"idle_timeout": 1}
    _assert_ended_once(idle, Call.EndReason.IDLE_TIMEOUT, pushes, asgi_server)
    talking.refresh_from_db()
    assert talking.status == Call.Status.ACTIVE and talking.last_activity_at is not None


@pytest.mark.django_db(transaction=True)
def test_it_ends_a_call_that_never_got_set_up(make_call, settings, pushes):
    settings.REALTIME_SETUP_TIMEOUT_SECONDS = 20
    stuck = make_call()  # pending: recorded, never answered (a create that died half-way)
    fresh = make_call()
    _age(stuck, seconds=21)
    pushes.clear()

    result = async_to_sync(sweeper.sweep_once)()

    assert result.ended == {"setup_timeout": 1}
    _assert_ended_once(stuck, Call.EndReason.SETUP_TIMEOUT, pushes)
    fresh.refresh_from_db()
    assert fresh.status == Call.Status.PENDING


@pytest.mark.django_db(transaction=True)
def test_it_ends_a_call_once_when_two_sweepers_race(sdp_offer, asgi_server, settings, pushes):
    settings.REALTIME_MAX_DURATION_SECONDS = 60
    call = make_call(sdp_offer)
    _age(call, seconds=61)
    pushes.clear()

    async def both() -> list[sweeper.SweepResult]:
        return await asyncio.gather(sweeper.sweep_once(), sweeper.sweep_once())

    results = async_to_sync(both)()

    assert sorted(sum(r.ended.values()) for r in results) == [0, 1]
    _assert_ended_once(call, Call.EndReason.MAX_DURATION, pushes, asgi_server)
    assert asgi_server.engine("GET", f"calls/{call.upstream_id}").json()["hangup_requests"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_sweeps_inside_the_server_process(sdp_offer, tmp_path):
    # The embedded default: the sweeper runs on the server's background thread, no worker needed.
    server = start_server(tmp_path, extra_env={"REALTIME_MONITORS": "embedded", "REALTIME_MAX_DURATION_SECONDS": "2"})
    try:
        response = httpx.post(f"{server.url}/api/realtime/calls", json={"sdp": sdp_offer}, timeout=20)
        assert response.status_code == 201
        call_id = response.json()["call_id"]
        asyncio.run(wait_until(lambda: Call.objects.filter(call_id=call_id, status=Call.Status.ENDED).exists()))
        call = Call.objects.get(call_id=call_id)
        assert (call.status, call.end_reason) == (Call.Status.ENDED, Call.EndReason.MAX_DURATION)
        assert CallEvent.objects.filter(call=call, event_type="call.ended").count() == 1
        assert server.engine("GET", f"calls/{call.upstream_id}").json()["closed_reason"] == "hangup"
    finally:
        stop_server(server)


@pytest.mark.django_db(transaction=True)
def test_it_ends_at_most_a_batch_per_pass_oldest_first(make_call, settings):
    settings.REALTIME_SETUP_TIMEOUT_SECONDS = 20
    stuck = [make_call() for _ in range(3)]
    for age, call in zip((30, 50, 40), stuck, strict=True):
        _age(call, seconds=age)

    due = sweeper.due_calls(now=timezone.now(), limit=2)

    assert [(call.pk, reason) for call, reason, _data in due] == [(stuck[1].pk, "setup_timeout"), (stuck[2].pk, "setup_timeout")]


@pytest.mark.django_db(transaction=True)
def test_it_shares_one_batch_between_the_reasons(sdp_offer, asgi_server, settings):
    settings.REALTIME_SETUP_TIMEOUT_SECONDS = 20
    settings.REALTIME_MAX_DURATION_SECONDS = 60
    settings.REALTIME_IDLE_TIMEOUT_SECONDS = 30
    stuck = services.call_open(offer=sdp_offer, session=parse_session({}), source=Call.Source.WEBRTC, actor=CallEvent.Actor.API)
    long, idle_one, idle_two = (make_call(sdp_offer) for _ in range(3))
    for seconds, call in ((21, stuck), (61, long), (31, idle_one), (32, idle_two)):
        _age(call, seconds=seconds)

    # The pending call first, then the one past its deadline; the batch is full before the idle.
    assert [(call.pk, reason) for call, reason, _data in sweeper.due_calls(now=timezone.now(), limit=2)] == [
        (stuck.pk, "setup_timeout"),
        (long.pk, "max_duration"),
    ]
    assert [(call.pk, reason) for call, reason, _data in sweeper.due_calls(now=timezone.now(), limit=3)] == [
        (stuck.pk, "setup_timeout"),
        (long.pk, "max_duration"),
        (idle_two.pk, "idle_timeout"),
    ]


@pytest.mark.django_db(transaction=True)
def test_it_starts_the_next_pass_at_once_after_a_full_batch(make_call, settings, monkeypatch):
    settings.REALTIME_SETUP_TIMEOUT_SECONDS = 20
    settings.REALTIME_SWEEP_INTERVAL_SECONDS = 60  # a pass that waited would never come in time
    monkeypatch.setattr(sweeper, "SWEEP_BATCH", 2)
    stuck = [make_call() for _ in range(5)]
    for call in stuck:
        _age(call, seconds=21)
    passes: list[sweeper.SweepResult] = []
    sweep_once = sweeper.sweep_once

    async def counted() -> sweeper.SweepResult:
        passes.append(await sweep_once())
        return passes[-1]

    monkeypatch.setattr(sweeper, "sweep_once", counted)

    async def sweep_until_waiting() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sweeper.run(stop))
        await wait_until(lambda: len(passes) == 3, within=10)
        stop.set()
        await task

    async_to_sync(sweep_until_waiting)()

    # Two full batches, then the last call: that pass was not full, so the sweeper waits.
    assert [(sum(p.ended.values()), p.full) for p in passes] == [(2, True), (2, True), (1, False)]
    assert Call.objects.filter(pk__in=[c.pk for c in stuck], status=Call.Status.ENDED).count() == 5


@pytest.mark.django_db(transaction=True)
def test_it_gives_calls_active_before_the_upgrade_their_own_deadline(settings):
    # The migration that adds `deadline_at` fills it for calls active when it runs (answer + the
    # call's own limit, else the setting's): the sweeper finds them like any other.
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("realtime", "0012_call_console")], [("realtime", "0013_call_deadline")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("realtime", "Call")
    answered = timezone.now() - timedelta(seconds=100)
    common = {"model": "gpt-realtime", "voice": "marin", "upstream_model": "gpt-realtime", "sdp_offer": "v=0", "created_at": answered}
    own = old.objects.create(**common, status="active", answered_at=answered, max_duration_seconds=60).pk
    default = old.objects.create(**common, status="active", answered_at=answered, max_duration_seconds=None).pk
    ended = old.objects.create(**common, status="ended", answered_at=answered, max_duration_seconds=60).pk
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        deadlines = dict(Call.objects.filter(pk__in=[own, default, ended]).values_list("pk", "deadline_at"))
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert deadlines == {
        own: answered + timedelta(seconds=60),
        default: answered + timedelta(seconds=settings.REALTIME_MAX_DURATION_SECONDS),
        ended: None,
    }
    assert {call.pk for call, reason, _data in sweeper.due_calls(now=timezone.now()) if reason == "max_duration"} == {own}
