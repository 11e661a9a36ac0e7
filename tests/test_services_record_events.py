"""services.call_record_events: one transaction per batch, each upstream event once, usage and cost summed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from realtime import services
from realtime.models import Call, CallCounter, CallEvent
from realtime.monitor import EventBuffer
from tests import query_plans


@pytest.fixture
def call(db: None) -> Call:
    return Call.objects.create(
        status=Call.Status.ACTIVE,
        upstream_id="rtc_u1_test",
        model="gpt-realtime",
        voice="marin",
        upstream_model="gpt-realtime-2025-08-28",  # a dated snapshot bills as its family
        session_upstream={"type": "realtime", "audio": {"input": {"transcription": {"model": "gpt-realtime-whisper"}}}},
        sdp_offer="v=0",
        created_at=timezone.now(),
    )


def _usage(*, text_in: int, audio_in: int, text_cached: int, audio_cached: int, text_out: int, audio_out: int) -> dict[str, Any]:
    return {
        "total_tokens": text_in + audio_in + text_out + audio_out,
        "input_tokens": text_in + audio_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": 0,
            "cached_tokens": text_cached + audio_cached,
            "cached_tokens_details": {"text_tokens": text_cached, "audio_tokens": audio_cached, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def _event(event_id: str, event_type: str, **data: Any) -> services.UpstreamEvent:
    return services.UpstreamEvent(event_type, event_id, data, timezone.now())


@pytest.mark.django_db(transaction=True)
def test_it_stores_a_batch_once_and_pushes_it_once(call, pushes, django_assert_max_num_queries):
    batch = [_event("event_1", "session.created", session={"id": "sess_1"}), _event("event_2", "input_audio_buffer.speech_started")]

    # dedupe SELECT, one INSERT, the transaction (BEGIN, COMMIT), one UPDATE of the call's last
    # activity (speech), and one upsert of the statistics counters
    with django_assert_max_num_queries(6):
        assert services.call_record_events(call=call, events=batch) == 2
    # It should skip events already stored (a takeover overlap), and store only the new one.
    assert services.call_record_events(call=call, events=[*batch, _event("event_3", "rate_limits.updated", rate_limits=[])]) == 1

    rows = list(CallEvent.objects.filter(call=call).order_by("id").values_list("upstream_event_id", "event_type", "actor"))
    assert rows == [
        ("event_1", "session.created", "upstream"),
        ("event_2", "input_audio_buffer.speech_started", "upstream"),
        ("event_3", "rate_limits.updated", "upstream"),
    ]
    assert [p["event"]["event_type"] for p in pushes] == ["session.created", "input_audio_buffer.speech_started", "rate_limits.updated"]
    assert pushes[0]["event"]["event_data"] == {"session": {"id": "sess_1"}}
    assert all(p["call"] is None for p in pushes)


@pytest.mark.django_db(transaction=True)
def test_it_stores_the_new_events_of_a_batch_in_order_and_counts_only_them(call, pushes):
    usage = _usage(text_in=10, audio_in=0, text_cached=0, audio_cached=0, text_out=5, audio_out=0)
    services.call_record_events(call=call, events=[_event("e2", "response.done", response={"usage": usage})])
    before = CallEvent.objects.filter(call=call).count()

    # A takeover's overlap: e2 is stored already; an event without an id is always new.
    stored = services.call_record_events(
        call=call,
        events=[
            _event("e1", "session.updated", session={}),
            _event("e2", "response.done", response={"usage": usage}),
            _event("", "rate_limits.updated", rate_limits=[]),
            _event("e3", "response.done", response={"usage": usage}),
        ],
    )

    assert stored == 3
    rows = list(CallEvent.objects.filter(call=call).order_by("id").values_list("id", "upstream_event_id", "event_type"))[before:]
    assert [(upstream_id, event_type) for _, upstream_id, event_type in rows] == [
        ("e1", "session.updated"),
        ("", "rate_limits.updated"),
        ("e3", "response.done"),
    ]
    # Each push carries its row's id, in order.
    assert [(p["event"]["id"], p["event"]["event_type"]) for p in pushes[-3:]] == [(pk, event_type) for pk, _, event_type in rows]
    call.refresh_from_db()
    # e2's usage counted once, e3's once.
    assert (call.input_tokens, call.output_tokens, call.usage["responses"]) == (20, 10, 2)


@pytest.mark.django_db(transaction=True)
def test_it_stores_a_batch_with_nothing_to_account_for_and_counts_only_the_new_events(call, pushes, django_assert_max_num_queries):
    def counted() -> int:
        return CallCounter.objects.filter(scope="all", dimension="total").values_list("events", flat=True).first() or 0

    before = counted()
    # On PostgreSQL one statement (the events and their counters), no transaction around it.
    with django_assert_max_num_queries(1 if connection.vendor == "postgresql" else 6):
        assert (
            services.call_record_events(
                call=call, events=[_event("e1", "session.created", session={}), _event("e2", "rate_limits.updated")]
            )
            == 2
        )
    assert counted() == before + 2

    # A takeover's overlap: only e3 is new, and only it is counted and pushed.
    assert (
        services.call_record_events(call=call, events=[_event("e2", "rate_limits.updated"), _event("e3", "session.updated", session={})])
        == 1
    )
    assert counted() == before + 3
    assert services.call_record_events(call=call, events=[_event("e3", "session.updated", session={})]) == 0
    assert counted() == before + 3
    rows = list(CallEvent.objects.filter(call=call).order_by("id").values_list("id", "upstream_event_id"))
    assert [upstream_id for _, upstream_id in rows] == ["e1", "e2", "e3"]
    assert [p["event"]["id"] for p in pushes] == [pk for pk, _ in rows]


@pytest.mark.django_db(transaction=True)
def test_it_sums_usage_and_prices_cached_tokens_as_a_subset(call):
    first = _usage(text_in=100, audio_in=50, text_cached=0, audio_cached=0, text_out=20, audio_out=40)
    # More cached than input, as in OpenAI's own example: the uncached part is clamped at zero.
    second = _usage(text_in=100, audio_in=110, text_cached=120, audio_cached=50, text_out=10, audio_out=30)
    services.call_record_events(call=call, events=[_event("e1", "response.done", response={"usage": first})])
    services.call_record_events(
        call=call,
        events=[
            _event("e2", "response.done", response={"usage": second}),
            _event("e3", "conversation.item.input_audio_transcription.completed", item_id="i", usage={"type": "duration", "seconds": 30}),
        ],
    )

    call.refresh_from_db()
    assert (call.input_tokens, call.output_tokens) == (360, 100)
    assert call.usage["responses"] == 2
    assert call.usage["input_token_details"]["cached_tokens_details"] == {"text_tokens": 120, "audio_tokens": 50, "image_tokens": 0}
    assert call.usage["transcription"] == {"seconds": 30, "items": 1}
    # gpt-realtime: text 4.00 / cached 0.40 / out 16.00, audio 32.00 / cached 0.40 / out 64.00 per 1M.
    first_cost = Decimal("100") * 4 + 50 * 32 + 20 * 16 + 40 * 64
    second_cost = Decimal("0") * 4 + Decimal("100") * Decimal("0.40") + 60 * 32 + 50 * Decimal("0.40") + 10 * 16 + 30 * 64
    whisper = Decimal("0.017") / 2
    assert call.cost_usd == (first_cost + second_cost) / 1_000_000 + whisper


@pytest.mark.django_db(transaction=True)
def test_it_leaves_the_cost_unknown_for_a_model_without_a_price(call):
    Call.objects.filter(pk=call.pk).update(upstream_model="some-future-model")
    call.refresh_from_db()
    usage = _usage(text_in=1, audio_in=1, text_cached=0, audio_cached=0, text_out=1, audio_out=1)
    services.call_record_events(call=call, events=[_event("e1", "response.done", response={"usage": usage})])

    call.refresh_from_db()
    assert call.cost_usd is None
    assert call.input_tokens == 2


def test_it_folds_deltas_into_the_event_that_completes_them():
    buffer = EventBuffer()
    where = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}
    buffer.add({"type": "response.output_item.added", "event_id": "e0", "item": {}})
    for n, chunk in enumerate(("Hel", "lo")):
        buffer.add({"type": "response.output_audio_transcript.delta", "event_id": f"d{n}", **where, "delta": chunk})
    buffer.add({"type": "response.output_audio_transcript.done", "event_id": "e1", **where, "transcript": "Hello"})

    [stored] = buffer.take()
    assert (stored.event_type, stored.event_id) == ("response.output_audio_transcript.done", "e1")
    assert stored.data == {**where, "transcript": "Hello", "deltas": 2}
    assert buffer.take() == []


@pytest.mark.django_db(transaction=True)
def test_it_stores_events_and_figures_through_indexes(call, pushes):
    services.call_record_events(call=call, events=[_event("e0", "session.created", session={})])
    figures = {"turns": 0, "interruptions": 0, "latency_ms": {"p50": None, "p95": None, "max": None}, "latency_histogram": {}}

    with query_plans.capture() as queries:
        # A batch with nothing to account for, one with speech (and one stored already), figures.
        services.call_record_events(call=call, events=[_event("e1", "session.updated", session={})])
        services.call_record_events(
            call=call, events=[_event("e1", "session.updated", session={}), _event("e2", "input_audio_buffer.speech_started")]
        )
        services.call_record_metrics(call=call, metrics={**figures, "silence_seconds": 1.0})
        services.call_record_metrics(call=call, metrics={**figures, "silence_seconds": 2.0})

    assert query_plans.checked(queries) >= 4
    assert query_plans.problems(queries) == []
