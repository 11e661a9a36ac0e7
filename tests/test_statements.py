"""The transitions' hand-built statements (`realtime.statements`) write what the ORM would."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from realtime import statements
from realtime.models import Call, CallEvent


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
