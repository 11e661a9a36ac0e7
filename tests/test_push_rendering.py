"""A transition's push: what it says is fixed in the transaction (the call as that transition left
it), and rendered when it is delivered, after the commit and out of reach of the database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from realtime import publish, services, upstream
from realtime.models import Call, CallEvent


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What `publish.send` is handed after each commit, not rendered yet."""
    handed: list[dict[str, Any]] = []
    monkeypatch.setattr("realtime.publish.send", lambda **kw: handed.append(kw))
    return handed


@pytest.mark.django_db
def test_it_pushes_each_transition_as_it_left_the_call(
    make_call: Callable[..., Call], sent: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        call = make_call()
    with django_capture_on_commit_callbacks(execute=True):
        services.call_answer(call=call, created=upstream.CreatedCall(upstream_id="rtc_as_it_left", sdp_answer="v=0"))
    with django_capture_on_commit_callbacks(execute=True):
        services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)

    # Rendered only now, after the call changed twice more: each push still shows its own transition.
    shown = [publish.rendered(push["event"], push["call"]) for push in sent]
    assert [(event["event_type"], pushed["status"], pushed["upstream_id"]) for event, pushed in shown] == [
        ("call.created", "pending", ""),
        ("call.answered", "active", "rtc_as_it_left"),
        ("call.ended", "ended", "rtc_as_it_left"),
    ]
    assert shown[2][1]["end_reason"] == "api_hangup"
    assert shown[1][1]["end_reason"] == ""


@pytest.mark.django_db
def test_it_reads_the_deferred_fields_a_push_shows_in_the_transaction_and_nothing_when_rendering(
    make_call: Callable[..., Call], django_assert_num_queries: Any
) -> None:
    made = make_call()
    call = Call.objects.only("id", "call_id", "status").get(pk=made.pk)

    with django_assert_num_queries(1):
        state = publish.as_of_now(call)
    # The documents (SDP, session) are no push's: still not read.
    assert {"sdp_offer", "sdp_answer", "session_requested", "session_upstream", "sip_headers"} <= state.get_deferred_fields()
    with django_assert_num_queries(0):
        _event, shown = publish.rendered({"id": 1}, state)
    assert shown is not None
    assert (shown["call_id"], shown["model"], shown["voice"]) == (made.call_id, made.model, made.voice)


@pytest.mark.django_db(transaction=True)
def test_it_renders_a_push_after_the_commit(make_call: Callable[..., Call], monkeypatch: pytest.MonkeyPatch) -> None:
    call = make_call()
    rendering = publish.represent
    in_transaction: list[bool] = []

    def spied(serializer_class: Any, instance: Any) -> dict[str, Any]:
        in_transaction.append(connection.in_atomic_block)
        return rendering(serializer_class, instance)

    monkeypatch.setattr("realtime.publish.represent", spied)
    services.call_answer(call=call, created=upstream.CreatedCall(upstream_id="rtc_after_commit", sdp_answer="v=0"))

    # One lifecycle push (call.answered), its call rendered once, when delivered after the commit.
    assert in_transaction == [False]
