"""The transitions' hand-built statements (`realtime.statements`) write what the ORM would."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from realtime import statements
from realtime.models import ApiKey, Call, CallEvent


@pytest.mark.django_db
@pytest.mark.postgresql
def test_it_inserts_an_event_as_the_orm_reads_it_back(make_call: Callable[..., Call]) -> None:
    call = make_call()
    at = timezone.now() - timedelta(minutes=3)
    event = CallEvent(call=call, event_type="call.answered", actor=CallEvent.Actor.UPSTREAM, data={"a": [1, "é", None]}, created_at=at)

    statements.insert(event)

    stored = CallEvent.objects.get(pk=event.pk)
    assert (stored.call_id, stored.event_type, stored.actor, stored.data, stored.created_at, stored.upstream_event_id) == (
        call.pk,
        "call.answered",
        "upstream",
        {"a": [1, "é", None]},
        at,
        "",
    )
    assert not event._state.adding


@pytest.mark.django_db
@pytest.mark.postgresql
def test_it_updates_a_row_only_while_its_condition_holds(make_call: Callable[..., Call]) -> None:
    call = make_call()
    now = timezone.now()
    changes = {"status": Call.Status.ENDED, "ended_at": now, "cost_usd": Decimal("0.012345"), "duration_seconds": 1.5}

    assert statements.update_if(Call, call.pk, {"status": Call.Status.ACTIVE}, changes) == 0
    assert statements.update_if(Call, call.pk, {"status": Call.Status.PENDING}, changes) == 1
    assert statements.update_if(Call, call.pk, {"upstream_closed_at": None}, {"upstream_closed_at": now}) == 1
    assert statements.update_if(Call, call.pk, {"upstream_closed_at": None}, {"upstream_closed_at": now}) == 0

    stored = Call.objects.get(pk=call.pk)
    assert (stored.status, stored.ended_at, stored.cost_usd, stored.duration_seconds, stored.upstream_closed_at) == (
        "ended",
        now,
        Decimal("0.012345"),
        1.5,
        now,
    )


@pytest.mark.django_db
@pytest.mark.postgresql
def test_it_reads_a_row_into_the_instance_the_orm_would_build(
    make_call: Callable[..., Call], make_key: Callable[..., tuple[ApiKey, str]]
) -> None:
    api_key, _raw = make_key()
    call = make_call(api_key)
    Call.objects.filter(pk=call.pk).update(
        cost_usd=Decimal("0.123456"), metrics={"turns": 2}, answered_at=timezone.now(), duration_seconds=2.5, has_transcript=True
    )
    documents = frozenset({"sdp_offer", "sdp_answer", "session_requested", "session_upstream", "sip_headers"})

    read = statements.get(Call, {"call_id": call.call_id, "api_key": api_key.pk}, defer=documents)

    expected = Call.objects.defer(*documents).get(pk=call.pk)
    assert read is not None and read.get_deferred_fields() == expected.get_deferred_fields() == documents
    loaded = [f.attname for f in Call._meta.concrete_fields if f.attname not in documents]
    assert [(getattr(read, name), type(getattr(read, name))) for name in loaded] == [
        (getattr(expected, name), type(getattr(expected, name))) for name in loaded
    ]
    assert (read._state.adding, read._state.db) == (False, expected._state.db)
    assert statements.get(Call, {"call_id": call.call_id, "api_key": None}) is None
    assert statements.get(Call, {"call_id": "call_missing"}) is None


@pytest.mark.django_db
@pytest.mark.postgresql
def test_it_counts_live_calls_in_all_and_of_one_key(make_call: Callable[..., Call], make_key: Callable[..., tuple[ApiKey, str]]) -> None:
    api_key, _raw = make_key()
    make_call(api_key), make_call(None)
    ended = make_call(api_key)
    Call.objects.filter(pk=ended.pk).update(status=Call.Status.ENDED)

    assert statements.live_calls(api_key_id=api_key.pk, total=True) == (2, 1)
    assert statements.live_calls(api_key_id=None, total=True) == (2, 0)
    assert statements.live_calls(api_key_id=api_key.pk, total=False) == (0, 1)
