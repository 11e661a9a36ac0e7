"""The statistics counters: after any mix of creates, answers, failures, ends, sideband usage,
measured turns (stored again and again, or by a monitor that saw fewer) and crashes (a transition
whose transaction dies), they equal a full recount of calls and events, for every call and for each
API key's own, and the hourly counters (turn latencies included) a recount of the calls."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from realtime import counters, quality, selectors, services, upstream
from realtime.auth.principals import Principal
from realtime.exceptions import CallStateConflict, UpstreamError
from realtime.models import ApiKey, Call, CallBucket, CallCounter, CallEvent
from realtime.sessions import parse_session

MODELS = ["gpt-realtime", "gpt-realtime-mini", "gpt-4o-realtime-preview"]
VOICES = ["alloy", "echo", "marin"]
REASONS = [r for r in Call.EndReason.values if r != Call.EndReason.UPSTREAM_ERROR] + [Call.EndReason.UPSTREAM_ERROR]


class Crash(Exception):
    """The process died mid-transaction: everything the transaction wrote is gone."""


def _usage(n_in: int, n_out: int) -> dict[str, Any]:
    return {
        "total_tokens": n_in + n_out,
        "input_tokens": n_in,
        "output_tokens": n_out,
        "input_token_details": {"text_tokens": n_in // 2, "audio_tokens": n_in - n_in // 2, "cached_tokens": n_in // 4},
        "output_token_details": {"text_tokens": n_out // 3, "audio_tokens": n_out - n_out // 3},
    }


def _principal(key: ApiKey) -> Principal:
    return Principal(kind="api_key", can_view=True, can_create=True, can_end=True, api_key=key)


def _rows() -> dict[tuple[str, str, str], dict[str, float]]:
    """Counter rows with something in them (a row whose calls all moved on counts zero)."""
    rows = {}
    for row in CallCounter.objects.values("scope", "dimension", "value", *counters.AMOUNTS):
        amounts = {name: row[name] for name in counters.AMOUNTS}
        if any(amounts.values()):
            rows[(row["scope"], row["dimension"], row["value"])] = amounts
    return rows


def _rounded(rows: dict[Any, dict[str, float]]) -> dict[Any, dict[str, float]]:
    return {key: {**amounts, "duration_seconds": round(amounts["duration_seconds"], 6)} for key, amounts in rows.items()}


class CallHistory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Each example starts from an empty history (a savepoint rolled back in teardown).
        self._history = transaction.atomic()
        self._history.__enter__()
        self.keys = [ApiKey(name=f"key {i}") for i in range(2)]
        for key in self.keys:
            services.api_key_create(key, by=services.SYSTEM)
        self.upstream_ids = 0

    def _calls(self, *statuses: str) -> list[int]:
        return list(Call.objects.filter(status__in=statuses).order_by("pk").values_list("pk", flat=True))

    def _load(self, pk: int, only: bool) -> Call:
        # However the caller loaded the call, the transition counts the same.
        calls = Call.objects.only("pk", "call_id", "status") if only else Call.objects.all()
        return calls.get(pk=pk)

    def _maybe_crash(self, crash: bool, change: Any) -> None:
        try:
            with transaction.atomic():
                change()
                if crash:
                    raise Crash
        except (Crash, CallStateConflict):
            pass

    @rule(key=st.sampled_from([None, 0, 1]), model=st.sampled_from(MODELS), voice=st.sampled_from(VOICES), crash=st.booleans())
    def create(self, key: int | None, model: str, voice: str, crash: bool) -> None:
        api_key = None if key is None else self.keys[key]
        session = parse_session({"model": model, "voice": voice})
        source = Call.Source.SIP if voice == "marin" else Call.Source.WEBRTC
        self._maybe_crash(crash, lambda: services.call_open(offer="v=0", session=session, source=source, actor="api", api_key=api_key))

    @precondition(lambda self: self._calls(Call.Status.PENDING))
    @rule(data=st.data(), crash=st.booleans(), only=st.booleans())
    def answer(self, data: st.DataObject, crash: bool, only: bool) -> None:
        call = self._load(data.draw(st.sampled_from(self._calls(Call.Status.PENDING))), only)
        self.upstream_ids += 1
        created = upstream.CreatedCall(upstream_id=f"rtc_{self.upstream_ids}", sdp_answer="v=0 answer")
        self._maybe_crash(crash, lambda: services.call_answer(call=call, created=created))

    @precondition(lambda self: self._calls(Call.Status.PENDING))
    @rule(data=st.data(), crash=st.booleans(), only=st.booleans())
    def fail(self, data: st.DataObject, crash: bool, only: bool) -> None:
        call = self._load(data.draw(st.sampled_from(self._calls(Call.Status.PENDING))), only)
        error = UpstreamError("refused")
        self._maybe_crash(crash, lambda: services.call_fail(call=call, error=error))

    @precondition(lambda self: self._calls(*Call.ENDABLE))
    @rule(data=st.data(), reason=st.sampled_from(REASONS), crash=st.booleans(), only=st.booleans())
    def end(self, data: st.DataObject, reason: str, crash: bool, only: bool) -> None:
        call = self._load(data.draw(st.sampled_from(self._calls(*Call.ENDABLE))), only)
        self._maybe_crash(crash, lambda: services.call_end(call=call, reason=reason, actor=CallEvent.Actor.SYSTEM))

    @precondition(lambda self: self._calls(Call.Status.ENDED))
    @rule(data=st.data(), only=st.booleans())
    def end_again(self, data: st.DataObject, only: bool) -> None:
        # A second end (a race lost, a sweeper late) changes nothing.
        call = self._load(data.draw(st.sampled_from(self._calls(Call.Status.ENDED))), only)
        with pytest.raises(CallStateConflict):
            services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)

    @precondition(lambda self: self._calls(Call.Status.ACTIVE))
    @rule(
        data=st.data(),
        tokens=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000)), max_size=3),
        extra=st.integers(0, 3),
        crash=st.booleans(),
    )
    def sideband(self, data: st.DataObject, tokens: list[tuple[int, int]], extra: int, crash: bool) -> None:
        call = Call.objects.get(pk=data.draw(st.sampled_from(self._calls(Call.Status.ACTIVE))))
        now = timezone.now()
        events = [services.UpstreamEvent("response.done", "", {"response": {"usage": _usage(i, o)}}, now) for i, o in tokens]
        events += [services.UpstreamEvent("input_audio_buffer.speech_started", "", {}, now) for _ in range(extra)]
        self._maybe_crash(crash, lambda: services.call_record_events(call=call, events=events))

    @precondition(lambda self: self._calls(Call.Status.ACTIVE, Call.Status.ENDED))
    @rule(data=st.data(), latencies=st.lists(st.floats(50, 8000), max_size=6), crash=st.booleans())
    def measure(self, data: st.DataObject, latencies: list[float], crash: bool) -> None:
        # The monitor stores a call's figures as turns complete, and again after it ended; a
        # monitor taking over may store fewer turns than the one before it did.
        call = Call.objects.get(pk=data.draw(st.sampled_from(self._calls(Call.Status.ACTIVE, Call.Status.ENDED))))
        meter = quality.TurnMeter(latencies_ms=latencies)
        self._maybe_crash(crash, lambda: services.call_record_metrics(call=call, metrics=meter.metrics()))

    @precondition(lambda self: self._calls(Call.Status.ENDED))
    @rule(data=st.data(), hung_up=st.booleans())
    def hangup_confirmed(self, data: st.DataObject, hung_up: bool) -> None:
        call = Call.objects.get(pk=data.draw(st.sampled_from(self._calls(Call.Status.ENDED))))
        services.call_note_upstream_closed(call=call, hung_up=hung_up)

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._history.__exit__(None, None, None)

    @invariant()
    def counters_equal_a_recount(self) -> None:
        assert _rounded(_rows()) == _rounded(counters.recount())
        assert _rounded(counters.stored_hours()) == _rounded(counters.recount_hours())
        assert selectors.stats() == selectors.stats_recount()
        for key in self.keys:
            assert selectors.stats(principal=_principal(key)) == selectors.stats_recount(principal=_principal(key))


@pytest.mark.django_db
def test_it_keeps_the_counters_equal_to_a_recount_whatever_happens():
    run_state_machine_as_test(
        CallHistory,
        settings=hypothesis_settings(
            max_examples=12, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
        ),
    )


@pytest.mark.django_db
def test_it_rebuilds_the_counters_from_the_rows():
    key = ApiKey(name="integrator")
    services.api_key_create(key, by=services.SYSTEM)
    call = services.call_open(offer="v=0", session=parse_session({"voice": "echo"}), source="webrtc", actor="api", api_key=key)
    services.call_answer(call=call, created=upstream.CreatedCall(upstream_id="rtc_1", sdp_answer="v=0"))
    usage = {"response": {"usage": _usage(1000, 500)}}
    services.call_record_events(call=call, events=[services.UpstreamEvent("response.done", "e1", usage, timezone.now())])
    services.call_record_metrics(call=call, metrics=quality.TurnMeter(latencies_ms=[420.0, 480.0, 1700.0]).metrics())
    before = selectors.stats(principal=_principal(key))
    CallCounter.objects.update(calls=0, events=0, cost_micros=0)

    hours = counters.stored_hours()
    CallBucket.objects.update(calls=0, answered=0, cost_micros=0)

    written = counters.rebuild()
    written_hours = counters.rebuild_hours()

    assert written == len(_rows())
    # Its hour: in all, for its model, and its turns' two latency buckets for its model.
    assert written_hours == 4 and counters.stored_hours() == hours
    assert {value for dimension, _, value in hours if dimension == "latency"} == {"500:gpt-realtime-2.1", "2000:gpt-realtime-2.1"}
    assert selectors.stats(principal=_principal(key)) == before
    assert before["total_events"] == 3 and before["usage_by_model"]["gpt-realtime-2.1"]["input_tokens"] == 1000
    assert Decimal(str(before["total_cost_usd"])) == Call.objects.get(pk=call.pk).cost_usd


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fields", [None, ("pk",), ("pk", "call_id", "status", "created_at", "upstream_id")], ids=["full", "pk", "admin"])
def test_it_ends_a_call_the_same_way_however_the_caller_loaded_it(fields, pushes, django_assert_num_queries):
    opened = services.call_open(offer="v=0", session=parse_session({"voice": "echo"}), source="webrtc", actor="api")
    services.call_answer(call=opened, created=upstream.CreatedCall(upstream_id="rtc_1", sdp_answer="v=0"))
    calls = Call.objects.all() if fields is None else Call.objects.only(*fields)
    call = calls.get(pk=opened.pk)
    pushes.clear()

    # Fully loaded: the conditional UPDATE, the event, the counters, the hourly counters, the
    # webhook endpoints that want it (and BEGIN, COMMIT); on PostgreSQL, all in one statement that
    # commits on its own (no endpoint wants the event); a call loaded with .only() adds the one
    # query that loads what the push shows, never one per field.
    statements = 1 if connection.vendor == "postgresql" else 7
    with django_assert_num_queries(statements + (fields is not None)):
        ended = services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)

    assert ended.status == Call.Status.ENDED
    assert pushes[-1]["call"]["status"] == "ended" and pushes[-1]["call"]["voice"] == "echo"
    assert pushes[-1]["call"]["upstream_id"] == "rtc_1" and pushes[-1]["call"]["answered_at"] is not None
