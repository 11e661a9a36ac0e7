"""The call table's indexes as each database holds them (the query plans that use them are checked
in the *_plans tests): on PostgreSQL, where every transition of a call adds an entry to every
index whose condition the new row meets, the indexes read for some calls only (active ones, those
with a key, a route or an end reason) are partial; the call id has one index, for both equality
and prefix search. SQLite, which updates only the indexes whose columns changed, keeps them whole."""

from __future__ import annotations

import re

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from realtime.models import Call

PARTIAL_ON_POSTGRESQL = {
    "call_monitor_claim_idx": "(((status)::text = 'active'::text) AND (NOT ((upstream_id)::text = ''::text)))",
    "call_deadline_idx": "(((status)::text = 'active'::text) AND (deadline_at IS NOT NULL))",
    "call_idle_idx": "(((status)::text = 'active'::text) AND ((last_activity_at IS NOT NULL) OR (answered_at IS NOT NULL)))",
    "call_key_recent_idx": "(api_key_id IS NOT NULL)",
    "call_key_status_recent_idx": "(api_key_id IS NOT NULL)",
    "call_sip_route_idx": "(sip_route_id IS NOT NULL)",
    "call_reason_recent_idx": "(NOT ((end_reason)::text = ''::text))",
}


def _definitions() -> dict[str, str]:
    """Each index of the call table by name, with its definition as the database states it."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'realtime_call'")
        else:
            # The column's own UNIQUE constraint has an index without SQL: named, defined by PRAGMA.
            cursor.execute(
                "SELECT name, COALESCE(sql, 'UNIQUE ' || name) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'realtime_call'"
            )
        return dict(cursor.fetchall())


@pytest.mark.django_db
def test_it_keeps_the_indexes_of_some_calls_partial_on_postgresql_only() -> None:
    definitions = _definitions()

    for name, condition in PARTIAL_ON_POSTGRESQL.items():
        where = definitions[name].partition(" WHERE ")[2]
        assert where == (condition if connection.vendor == "postgresql" else ""), name
    # Whole calls past their retention come from the index of creation: none of ended calls.
    assert "call_ended_idx" not in definitions


@pytest.mark.django_db
def test_it_indexes_the_call_id_once() -> None:
    on_call_id = {name: sql for name, sql in _definitions().items() if re.search(r'\(\s*"?call_id"?[ )]', sql) or "autoindex" in name}

    assert len(on_call_id) == 1, on_call_id
    (definition,) = on_call_id.values()
    assert "UNIQUE" in definition
    if connection.vendor == "postgresql":
        # The pattern operator class: a prefix LIKE (the admin's id search) reads it too.
        assert definition.endswith("(call_id varchar_pattern_ops)")


def _call(**fields: str) -> Call:
    return Call.objects.create(
        model="gpt-realtime", voice="marin", upstream_model="gpt-realtime", sdp_offer="v=0", created_at=timezone.now(), **fields
    )


@pytest.mark.django_db
def test_it_refuses_a_second_call_with_the_same_id() -> None:
    call = _call()

    with pytest.raises(IntegrityError), transaction.atomic():
        _call(call_id=call.call_id)
    assert Call.objects.filter(call_id=call.call_id).count() == 1
