"""Call quality measured from sideband events (realtime.quality), stored on the call, shown in the API,
the WebSocket feeds and the admin's display helper. Unit tests: event sequences with chosen arrival
times; the end-to-end comparison with what a real caller hears is in test_call_quality_e2e.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from iaposte.asgi import application
from realtime import monitor as monitor_module
from realtime import publish, quality, services, sessions
from realtime.models import Call, CallBucket, CallEvent
from realtime.monitor import CallMonitor
from tests import query_plans

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def _measure(*events: tuple[float, str, dict[str, Any]], until: float | None = None) -> dict[str, Any]:
    meter = quality.TurnMeter()
    for ms, event_type, data in events:
        meter.add(event_type, data, _at(ms))
    return meter.metrics(until=None if until is None else _at(until))


def _turn(stop: float, first_audio: float, audio_end: float, response: str) -> list[tuple[float, str, dict[str, Any]]]:
    """A caller's stop, the answer's audio starting and ending, as WebRTC's sideband reports them."""
    return [
        (stop, "input_audio_buffer.speech_stopped", {"item_id": "item_u"}),
        (stop + 5, "input_audio_buffer.committed", {}),
        (first_audio - 2, "response.created", {"response": {"id": response}}),
        (first_audio, "output_audio_buffer.started", {"response_id": response}),
        (first_audio + 10, "response.output_audio_transcript.delta", {"response_id": response, "delta": "Bon"}),
        (first_audio + 50, "response.done", {"response": {"id": response, "status": "completed"}}),
        (audio_end, "output_audio_buffer.stopped", {"response_id": response}),
    ]


SESSION = (0, "session.created", {"session": {}})


def test_it_measures_turn_latency_talk_time_and_silence_from_webrtc_events():
    metrics = _measure(
        SESSION,
        (1000, "input_audio_buffer.speech_started", {"audio_start_ms": 700}),
        *_turn(3000, 3400, 5000, "resp_1"),
        (6000, "input_audio_buffer.speech_started", {}),
        *_turn(7000, 7900, 9000, "resp_2"),
        (9100, "rate_limits.updated", {}),
        until=10_000,
    )

    # Latency from each stop to the answer's first audio: 400 and 900 ms; p50 interpolated, p95 near the max.
    assert metrics == {
        "turns": 2,
        "latency_ms": {"p50": 650, "p95": 875, "max": 900},
        "interruptions": 0,
        "talk_seconds": {"caller": 3.0, "assistant": 2.7},
        # 0-1 s, 3-3.4 s, 5-6 s, 7-7.9 s, 9-10 s (the call's end): nobody talks.
        "silence_seconds": 4.3,
        # The turns per latency bucket (upper bound in ms): what the dashboard's counters add up.
        "latency_histogram": {"400": 1, "900": 1},
    }


def test_it_counts_a_barge_in_once_whatever_events_report_it():
    metrics = _measure(
        SESSION,
        (100, "input_audio_buffer.speech_started", {}),
        (1000, "input_audio_buffer.speech_stopped", {}),
        (1500, "output_audio_buffer.started", {"response_id": "resp_1"}),
        (1600, "response.done", {"response": {"id": "resp_1", "status": "completed"}}),
        # The caller speaks over the answer: VAD clears the buffer and truncates the item.
        (2000, "input_audio_buffer.speech_started", {}),
        (2010, "output_audio_buffer.cleared", {"response_id": "resp_1"}),
        (2011, "conversation.item.truncated", {"item_id": "item_a", "audio_end_ms": 500}),
        (2500, "input_audio_buffer.speech_stopped", {}),
        (2800, "output_audio_buffer.started", {"response_id": "resp_2"}),
        # A client's response.cancel: the response ends cancelled, then the buffer clears.
        (2900, "response.done", {"response": {"id": "resp_2", "status": "cancelled"}}),
        (2910, "output_audio_buffer.cleared", {"response_id": "resp_2"}),
    )

    assert metrics["interruptions"] == 2
    assert metrics["turns"] == 2
    assert metrics["latency_ms"]["max"] == 500
    # The first answer played 1.5-2.01 s (cut when the buffer cleared), the second 2.8-2.91 s.
    assert metrics["talk_seconds"] == {"caller": 1.4, "assistant": 0.62}


def test_it_counts_a_cancelled_response_that_never_played():
    metrics = _measure(
        (0, "input_audio_buffer.speech_stopped", {}),
        (100, "response.created", {"response": {"id": "resp_1"}}),
        (200, "response.done", {"response": {"id": "resp_1", "status": "cancelled", "status_details": {"reason": "turn_detected"}}}),
    )

    assert (metrics["interruptions"], metrics["turns"]) == (1, 0)


def test_it_falls_back_to_audio_deltas_without_output_buffer_events():
    # A session whose sideband carries no output_audio_buffer.* (WebSocket-style): the first audio
    # delta is the start of the answer, response.done its end.
    metrics = _measure(
        (0, "input_audio_buffer.speech_started", {}),
        (800, "input_audio_buffer.speech_stopped", {}),
        (1100, "response.output_audio.delta", {"delta": "AAAA"}),
        (1150, "response.output_audio.delta", {"delta": "AAAA"}),
        (1120, "response.output_audio_transcript.delta", {"delta": "Hi"}),
        (1900, "response.done", {"response": {"id": "resp_1", "status": "completed"}}),
    )

    assert metrics["latency_ms"] == {"p50": 300, "p95": 300, "max": 300}
    assert metrics["talk_seconds"] == {"caller": 0.8, "assistant": 0.8}


def test_it_measures_from_the_last_stop_when_the_caller_speaks_again_before_an_answer():
    metrics = _measure(
        (0, "input_audio_buffer.speech_started", {}),
        (500, "input_audio_buffer.speech_stopped", {}),
        (700, "input_audio_buffer.speech_started", {}),
        (1500, "input_audio_buffer.speech_stopped", {}),
        (1800, "output_audio_buffer.started", {"response_id": "resp_1"}),
        # Late or duplicated audio signals of the same answer measure nothing more.
        (1810, "response.output_audio_transcript.delta", {}),
        (1820, "output_audio_buffer.started", {"response_id": "resp_1"}),
    )

    assert (metrics["turns"], metrics["latency_ms"]["max"]) == (1, 300)


def test_it_has_no_latency_before_any_turn_and_survives_missing_events():
    # No speech_stopped seen (a monitor that attached late): audio and stops without starts.
    metrics = _measure(
        (0, "output_audio_buffer.started", {"response_id": "resp_0"}),
        (400, "output_audio_buffer.stopped", {"response_id": "resp_0"}),
        (600, "input_audio_buffer.speech_stopped", {}),
    )

    assert metrics == {
        "turns": 0,
        "latency_ms": {"p50": None, "p95": None, "max": None},
        "interruptions": 0,
        "talk_seconds": {"caller": 0.0, "assistant": 0.4},
        "silence_seconds": 0.2,
        "latency_histogram": {},
    }


def test_it_reports_changes_only_when_a_measured_event_arrives():
    meter = quality.TurnMeter()
    meter.add("session.created", {}, _at(0))
    assert meter.take_changes() is None
    meter.add("input_audio_buffer.speech_started", {}, _at(10))
    assert meter.take_changes() is not None
    assert meter.take_changes() is None


@pytest.fixture
def call(db: None) -> Call:
    return services.call_open(
        offer="v=0", session=sessions.parse_session({"voice": "echo"}), source=Call.Source.WEBRTC, actor=CallEvent.Actor.API
    )


METRICS = {
    "turns": 2,
    "latency_ms": {"p50": 650, "p95": 875, "max": 900},
    "interruptions": 1,
    "talk_seconds": {"caller": 3.0, "assistant": 2.7},
    "silence_seconds": 4.3,
    "latency_histogram": {"400": 1, "900": 1},
}


@pytest.mark.django_db(transaction=True)
def test_it_stores_metrics_in_one_update_without_an_event_and_pushes_them_after_commit(call, monkeypatch, django_assert_num_queries):
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(publish, "send_metrics", lambda message, to_list: sent.append({**message, "to_list": to_list}))
    events_before = CallEvent.objects.filter(call=call).count()

    with transaction.atomic():
        # The conditional UPDATE, which these figures' new turns fail; then the stored figures
        # read under lock, the UPDATE, the turns added to the hourly counters (and the savepoint
        # around them).
        with django_assert_num_queries(6):
            services.call_record_metrics(call=call, metrics=METRICS)
        assert sent == []  # not before commit

    call.refresh_from_db()
    assert (call.metrics, call.latency_p95_ms, call.latency_max_ms) == (METRICS, 875, 900)
    # A measurement is not a state transition: no CallEvent.
    assert CallEvent.objects.filter(call=call).count() == events_before
    assert sent == [{"type": "call.metrics", "call_id": call.call_id, "metrics": METRICS, "api_key_id": None, "to_list": True}]
    # Talk time alone changed: the call's subscribers hear of it, the list feed does not.
    services.call_record_metrics(call=call, metrics={**METRICS, "silence_seconds": 5.0})
    assert sent[-1]["to_list"] is False


@pytest.mark.django_db(transaction=True)
def test_it_stores_figures_that_add_no_turn_in_one_statement(call, monkeypatch, django_assert_num_queries):
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(publish, "send_metrics", lambda message, to_list: sent.append({**message, "to_list": to_list}))
    services.call_record_metrics(call=call, metrics=METRICS)
    counters = list(CallBucket.objects.order_by("pk").values())
    # The same turns, interruptions and latency buckets: talk time alone grew.
    later = {**METRICS, "silence_seconds": 9.5}

    # One UPDATE, no transaction around it (on PostgreSQL, no BEGIN and no COMMIT either).
    with django_assert_num_queries(1):
        services.call_record_metrics(call=call, metrics=later)

    call.refresh_from_db()
    assert (call.metrics, call.latency_p95_ms, call.latency_max_ms) == (later, 875, 900)
    assert list(CallBucket.objects.order_by("pk").values()) == counters
    assert sent[-1] == {"type": "call.metrics", "call_id": call.call_id, "metrics": later, "api_key_id": None, "to_list": False}
    # One more turn: the full path, and the hourly counters count it (its latency bucket).
    services.call_record_metrics(
        call=call, metrics={**later, "turns": later["turns"] + 1, "latency_histogram": {**later["latency_histogram"], "5000": 1}}
    )
    assert sent[-1]["to_list"] is True
    assert CallBucket.objects.get(dimension="latency", value__startswith="5000").calls == 1


@pytest.mark.django_db(transaction=True)
def test_it_pushes_a_call_s_first_figures_without_turns_to_its_subscribers_only(call, monkeypatch):
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(publish, "send_metrics", lambda message, to_list: sent.append({**message, "to_list": to_list}))
    quiet = {**METRICS, "turns": 0, "interruptions": 0, "latency_ms": {"p50": None, "p95": None, "max": None}, "latency_histogram": {}}

    # A call that ended before anyone spoke: its first figures add no turn and no interruption.
    services.call_record_metrics(call=call, metrics=quiet)

    call.refresh_from_db()
    assert call.metrics == quiet
    assert sent == [{"type": "call.metrics", "call_id": call.call_id, "metrics": quiet, "api_key_id": None, "to_list": False}]
    # Its first turn does reach the list feed.
    services.call_record_metrics(call=call, metrics={**quiet, "turns": 1})
    assert sent[-1]["to_list"] is True


@pytest.mark.django_db(transaction=True)
def test_it_stores_metrics_with_the_monitors_batch(call, monkeypatch, pushes):
    monkeypatch.setattr(publish, "send_metrics", lambda message, to_list: None)
    monitor = CallMonitor(call)
    now = timezone.now()
    for offset, event in enumerate(
        [
            {"type": "input_audio_buffer.speech_started", "event_id": "event_1"},
            {"type": "input_audio_buffer.speech_stopped", "event_id": "event_2"},
            {"type": "output_audio_buffer.started", "event_id": "event_3", "response_id": "resp_1"},
        ]
    ):
        at = now + timedelta(milliseconds=[0, 1000, 1250][offset])
        monitor.meter.add(event["type"], event, at)
        monitor.buffer.add(event, at)

    async_to_sync(monitor.flush)()

    call.refresh_from_db()
    assert call.metrics["latency_ms"] == {"p50": 250, "p95": 250, "max": 250}
    assert (call.latency_p95_ms, call.latency_max_ms) == (250, 250)
    # The stored events carry the same arrival times the meter measured.
    stopped = CallEvent.objects.get(call=call, event_type="input_audio_buffer.speech_stopped")
    assert stopped.created_at == now + timedelta(milliseconds=1000)
    # A monitor that recovers the call measures the stored events again: the same figures.
    recovered = CallMonitor(call, recovered_from="host:1:abc")
    recovered._resume_meter()
    assert recovered.meter.metrics()["latency_ms"] == call.metrics["latency_ms"]


@pytest.mark.django_db(transaction=True)
def test_it_measures_again_every_stored_event_page_by_page(call, monkeypatch, django_assert_num_queries):
    monkeypatch.setattr(monitor_module, "RESUME_PAGE", 2)
    now = timezone.now()
    kinds = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "output_audio_buffer.started"]
    CallEvent.objects.bulk_create(
        CallEvent(call=call, event_type=kinds[i % 3], data={}, actor=CallEvent.Actor.UPSTREAM, created_at=now + timedelta(seconds=i))
        for i in range(5)
    )
    recovered = CallMonitor(call, recovered_from="host:1:abc")
    seen: list[tuple[str, object]] = []
    monkeypatch.setattr(recovered.meter, "add", lambda event_type, data, at: seen.append((event_type, at)))

    # Pages of 2, 2 and 1: three reads, each from where the last ended.
    with django_assert_num_queries(3):
        recovered._resume_meter()

    assert seen == [(kinds[i % 3], now + timedelta(seconds=i)) for i in range(5)]


@pytest.mark.django_db(transaction=True)
def test_it_makes_no_final_write_for_a_call_with_nothing_measured(call, django_assert_num_queries):
    services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
    monitor = CallMonitor(call)

    # Nothing heard on its sideband: no figure to extend up to the end, not even a read.
    with django_assert_num_queries(0):
        async_to_sync(monitor._final_metrics)()

    call.refresh_from_db()
    assert call.metrics == {}


@pytest.mark.django_db(transaction=True)
def test_it_stores_the_last_events_with_the_final_figures_in_one_transaction(call, monkeypatch):
    spoke_at = timezone.now() - timedelta(seconds=3)
    monitor = CallMonitor(call)
    for kind, at in (
        ("input_audio_buffer.speech_started", spoke_at),
        ("input_audio_buffer.speech_stopped", spoke_at + timedelta(seconds=1)),
    ):
        event = {"type": kind, "event_id": f"ev_{kind}", "audio_start_ms": 0}
        monitor.meter.add(kind, event, at)
        monitor.buffer.add(event, at)
    services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
    stored: list[dict[str, Any]] = []
    record = services.call_record_events
    monkeypatch.setattr(services, "call_record_events", lambda **kwargs: stored.append(kwargs) or record(**kwargs))

    # The sideband closed: the monitor reads the call's state once, and finds it ended.
    assert async_to_sync(monitor._still_live)() is False
    with CaptureQueriesContext(connection) as queries:
        async_to_sync(monitor._final_metrics)()

    # One store: the two events and the figures counted up to the end (no second read of the end).
    assert [(len(s["events"]), s["metrics"]) for s in stored] == [(2, monitor.meter.metrics(until=call.ended_at))]
    assert not [q["sql"] for q in queries.captured_queries if q["sql"].startswith('SELECT "realtime_call"."ended_at"')]
    call.refresh_from_db()
    assert CallEvent.objects.filter(call=call, actor=CallEvent.Actor.UPSTREAM).count() == 2
    assert call.metrics["silence_seconds"] == round((call.ended_at - (spoke_at + timedelta(seconds=1))).total_seconds(), 3) > 0


@pytest.mark.django_db(transaction=True)
def test_it_shows_metrics_in_the_call_detail_and_list(call, api):
    assert api.get(f"/api/realtime/calls/{call.call_id}").json()["call"]["metrics"] is None

    services.call_record_metrics(call=call, metrics=METRICS)

    assert api.get(f"/api/realtime/calls/{call.call_id}").json()["call"]["metrics"] == METRICS
    assert api.get("/api/realtime/calls").json()["data"][0]["metrics"] == METRICS


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_pushes_metrics_to_the_call_feed_and_the_list_feed(call):
    feeds = []
    for path in (f"/ws/realtime/calls/{call.call_id}", "/ws/realtime/calls"):
        feed = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
        feed.scope["client"] = ["127.0.0.1", 50000]
        assert (await feed.connect(timeout=5))[0]
        feeds.append(feed)

    await database_sync_to_async(services.call_record_metrics)(call=call, metrics=METRICS)

    for feed in feeds:
        assert await feed.receive_json_from(timeout=5) == {"type": "call.metrics", "metrics": METRICS, "call_id": call.call_id}
        await feed.disconnect()
    assert await sync_to_async(CallEvent.objects.filter(call=call, event_type__startswith="call.metrics").count)() == 0


@pytest.mark.django_db(transaction=True)
def test_it_shows_the_metrics_on_the_admin_call_page(call, admin_client):
    services.call_record_metrics(call=call, metrics=METRICS)

    page = admin_client.get(f"/admin/realtime/call/{call.pk}/change/", HTTP_ACCEPT_LANGUAGE="en")

    assert page.status_code == 200
    html = page.content.decode()
    assert '<tr><th scope="row">Slowest answer</th><td>900 ms</td></tr>' in html
    assert '<tr><th scope="row">Interruptions</th><td>1</td></tr>' in html


@pytest.mark.django_db(transaction=True)
def test_it_measures_and_stores_through_indexes(call, monkeypatch, pushes):
    monkeypatch.setattr(publish, "send_metrics", lambda message, to_list: None)
    services.call_record_events(
        call=call,
        events=[services.UpstreamEvent("input_audio_buffer.speech_stopped", "event_1", {}, timezone.now())],
    )
    services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
    monitor = CallMonitor(call, recovered_from="host:1:abc")

    with query_plans.capture() as queries:
        monitor._resume_meter()
        async_to_sync(monitor._final_metrics)()

    assert query_plans.checked(queries) >= 3
    assert query_plans.problems(queries) == []
    # The stored stop read back, and the time from it to the call's end stored as silence.
    call.refresh_from_db()
    assert call.metrics["turns"] == 0
    assert call.metrics["silence_seconds"] == round((call.ended_at - monitor.meter.first_at).total_seconds(), 3) > 0
