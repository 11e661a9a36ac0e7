"""The transitions' hand-built statements (`realtime.statements`) write what the ORM would."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from realtime import counters, services, statements, upstream
from realtime.counters import Tally
from realtime.models import ApiKey, Call, CallCounter, CallEvent
from realtime.sessions import parse_session
from realtime.webhooks import services as webhook_services
from realtime.webhooks.models import WebhookEndpoint, WebhookMessage

from . import query_plans


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
def test_it_finds_the_row_of_a_conditional_update_by_its_id_alone(make_call: Callable[..., Call]) -> None:
    # Many calls, few of them pending, as a live history is: the status indexes look cheap then.
    calls = [make_call() for _ in range(40)]
    Call.objects.exclude(pk=calls[0].pk).update(status=Call.Status.ENDED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE " + connection.ops.quote_name(Call._meta.db_table))
    sql, params = statements._update(Call, calls[0].pk, {"status": Call.Status.PENDING}, {"error_message": "x"})

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A table this small is read whole otherwise (tests/query_plans.py does the same).
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
            nodes = [(plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]]
            for node in nodes:
                nodes += node.get("Plans", [])
            # An index scan or a bitmap one, by the primary key alone.
            used = [(node["Index Name"], node["Index Cond"]) for node in nodes if "Index Name" in node]
            assert used == [("realtime_call_pkey", f"(id = {calls[0].pk})")], nodes
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            assert [row[-1] for row in cursor.fetchall()] == ["SEARCH realtime_call USING INTEGER PRIMARY KEY (rowid=?)"]


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


def _answer(call: Call, *, status: str) -> tuple[CallEvent, dict[str, Any]]:
    """An answer's event and changes, applied while the call is in `status`."""
    event = CallEvent(
        call=call, event_type="call.answered", actor=CallEvent.Actor.UPSTREAM, data={"upstream_id": "rtc_1"}, created_at=timezone.now()
    )
    return event, {"status": Call.Status.ACTIVE, "upstream_id": "rtc_1", "answered_at": event.created_at}


@pytest.mark.django_db
@pytest.mark.postgresql
def test_it_writes_a_transition_its_event_and_counters_only_while_the_call_matches(make_call: Callable[..., Call]) -> None:
    call = make_call()
    counted = counters.recount()
    stale, changes = _answer(call, status=Call.Status.ACTIVE)
    tally = Tally.of(call).moved(old=Call.Status.PENDING, new=Call.Status.ACTIVE).events(1)

    assert (
        statements.transition(stale, upserts=tally.upserts(), endpoints=True, where={"status": Call.Status.ACTIVE}, changes=changes) is None
    )
    assert stale.pk is None and list(CallEvent.objects.filter(call=call).values_list("event_type", flat=True)) == ["call.created"]
    assert counters.recount() == counted == {row.pop("key"): row for row in _counters()}

    event, changes = _answer(call, status=Call.Status.PENDING)
    assert (
        statements.transition(event, upserts=tally.upserts(), endpoints=True, where={"status": Call.Status.PENDING}, changes=changes) == []
    )

    assert CallEvent.objects.get(pk=event.pk).event_type == "call.answered" and event.call_id == call.pk
    assert Call.objects.values_list("status", "upstream_id").get(pk=call.pk) == ("active", "rtc_1")
    assert counters.recount() == {row.pop("key"): row for row in _counters()}
    assert counters.recount_hours() == counters.stored_hours()


def _counters() -> list[dict[str, Any]]:
    rows = CallCounter.objects.values("scope", "dimension", "value", *counters.AMOUNTS)
    return [{"key": (r.pop("scope"), r.pop("dimension"), r.pop("value")), **r} for r in rows if any(r[a] for a in counters.AMOUNTS)]


@pytest.mark.django_db
@pytest.mark.postgresql
def test_it_reads_the_endpoints_in_scope_of_the_call_with_its_transition(
    make_call: Callable[..., Call], make_key: Callable[..., tuple[ApiKey, str]]
) -> None:
    acme, _ = make_key("acme")
    other, _ = make_key("other")
    unscoped = webhook_services.endpoint_create(url="http://127.0.0.1:9/a", events=["call.ended"], api_key=None)
    mine = webhook_services.endpoint_create(url="http://127.0.0.1:9/b", events=["call.answered", "call.ended"], api_key=acme)
    webhook_services.endpoint_create(url="http://127.0.0.1:9/c", events=["call.answered"], api_key=other)
    off = webhook_services.endpoint_create(url="http://127.0.0.1:9/d", events=["call.answered"], api_key=None)
    WebhookEndpoint.objects.filter(pk=off.pk).update(enabled=False)
    call = make_call(acme)
    event, changes = _answer(call, status=Call.Status.PENDING)

    found = statements.transition(event, upserts=[], endpoints=True, where={"status": Call.Status.PENDING}, changes=changes)

    assert sorted(found or []) == [(unscoped.pk, ["call.ended"]), (mine.pk, ["call.answered", "call.ended"])]
    lone = CallEvent(call=call, event_type="upstream.hangup", actor=CallEvent.Actor.SYSTEM, data={}, created_at=timezone.now())
    assert statements.transition(lone, upserts=[], endpoints=False) == []
    assert CallEvent.objects.filter(call=call).count() == 3


@pytest.mark.django_db
@pytest.mark.postgresql
def test_it_opens_a_call_with_its_event_and_counters_in_one_statement_on_postgresql(sdp_offer: str) -> None:
    with CaptureQueriesContext(connection) as queries:
        call = services.call_open(offer=sdp_offer, session=parse_session({}), source=Call.Source.WEBRTC, actor=CallEvent.Actor.API)

    written = [q["sql"].split(" ")[0] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    # The capacity check's lock and count (PostgreSQL: one execute), then the call, its event and
    # the counters (PostgreSQL: one statement, which also reads the webhook endpoints).
    if connection.vendor == "postgresql":
        assert written == ["SELECT", "WITH"]
        assert "pg_advisory_xact_lock" in queries.captured_queries[1]["sql"] and "COUNT(*)" in queries.captured_queries[1]["sql"]
    else:
        assert written == ["SELECT", "INSERT", "INSERT", "INSERT", "INSERT", "SELECT"]
    assert list(CallEvent.objects.filter(call=call).values_list("event_type", flat=True)) == ["call.created"]
    assert counters.recount() == {row.pop("key"): row for row in _counters()}


@pytest.mark.django_db
@pytest.mark.postgresql
def test_it_takes_the_capacity_lock_in_its_own_execute_with_server_side_binding(make_call: Callable[..., Call]) -> None:
    make_call()
    # Server-side binding takes one statement per execute: the lock (PostgreSQL's), then the count.
    postgresql = connection.vendor == "postgresql"
    options = connection.settings_dict["OPTIONS"]
    options["server_side_binding"] = True
    try:
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            assert statements.live_calls(api_key_id=None, total=True, lock=0x1A905E if postgresql else None) == (1, 0)
    finally:
        del options["server_side_binding"]
    selects = [q["sql"].split("(")[0] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    assert selects == (["SELECT pg_advisory_xact_lock", "SELECT COUNT"] if postgresql else ["SELECT COUNT"])


def _statements(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"].split(" ")[0] for q in queries.captured_queries]


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgresql
def test_it_commits_a_transition_no_endpoint_wants_as_one_statement_outside_a_transaction(
    make_call: Callable[..., Call], make_key: Callable[..., tuple[ApiKey, str]], pushes: list[dict[str, Any]]
) -> None:
    acme, _ = make_key("acme")
    other, _ = make_key("other")
    # Endpoints that do not want this call's answer: another key's, and one for other events.
    webhook_services.endpoint_create(url="http://127.0.0.1:9/a", events=["call.answered"], api_key=other)
    webhook_services.endpoint_create(url="http://127.0.0.1:9/b", events=["call.ended"], api_key=acme)
    call = make_call(acme)
    pushes.clear()

    with CaptureQueriesContext(connection) as queries, query_plans.capture() as sent:
        answered = services.call_answer(call=call, created=upstream.CreatedCall(upstream_id="rtc_1", sdp_answer="v=0"))

    # PostgreSQL: the statement alone, its own transaction (no BEGIN, no COMMIT); SQLite: BEGIN,
    # the UPDATE, the event, two upserts, the endpoints' read, COMMIT.
    assert answered and _statements(queries) == (
        ["WITH"] if connection.vendor == "postgresql" else ["BEGIN", "UPDATE", "INSERT", "INSERT", "INSERT", "SELECT", "COMMIT"]
    )
    assert connection.get_autocommit()
    assert query_plans.checked(sent) == 1 and query_plans.problems(sent) == []
    assert list(CallEvent.objects.filter(call=call).values_list("event_type", flat=True)) == ["call.created", "call.answered"]
    assert [p["event"]["event_type"] for p in pushes] == ["call.answered"]
    assert WebhookMessage.objects.count() == 0
    assert counters.recount() == {row.pop("key"): row for row in _counters()}
    # The call had been answered already: nothing is written, nothing pushed.
    assert not services.call_answer(call=call, created=upstream.CreatedCall(upstream_id="rtc_2", sdp_answer="v=0"))
    assert CallEvent.objects.filter(call=call).count() == 2 and len(pushes) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgresql
def test_it_writes_a_transition_an_endpoint_wants_with_its_deliveries_in_one_transaction(
    make_call: Callable[..., Call], make_key: Callable[..., tuple[ApiKey, str]], pushes: list[dict[str, Any]]
) -> None:
    acme, _ = make_key("acme")
    wants = webhook_services.endpoint_create(url="http://127.0.0.1:9/a", events=["call.transcript.completed"], api_key=acme)
    call = make_call(acme)
    pushes.clear()

    with CaptureQueriesContext(connection) as queries, query_plans.capture() as sent:
        ended = services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)

    # PostgreSQL: the statement outside a transaction writes nothing (an endpoint wants the end's
    # transcript); then the transaction, the statement again, the check for a transcript, COMMIT.
    if connection.vendor == "postgresql":
        assert _statements(queries) == ["WITH", "BEGIN", "WITH", "SELECT", "COMMIT"]
    assert ended.status == Call.Status.ENDED
    assert query_plans.checked(sent) >= 1 and query_plans.problems(sent) == []
    assert list(CallEvent.objects.filter(call=call).values_list("event_type", flat=True)) == ["call.created", "call.ended"]
    assert [p["event"]["event_type"] for p in pushes] == ["call.ended"]
    assert counters.recount() == {row.pop("key"): row for row in _counters()}
    # No transcript: no delivery, but the endpoint was asked in the end's transaction.
    assert WebhookMessage.objects.filter(endpoint=wants).count() == 0
    other = make_call(acme)
    Call.objects.filter(pk=other.pk).update(has_transcript=True)

    services.call_end(call=other, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)

    assert list(WebhookMessage.objects.filter(endpoint=wants).values_list("event_type", "call_id")) == [
        ("call.transcript.completed", other.pk)
    ]


@pytest.mark.django_db
@pytest.mark.postgresql
def test_it_keeps_each_transition_statement_within_what_psycopg_parses_once(
    make_call: Callable[..., Call], make_key: Callable[..., tuple[ApiKey, str]], settings: Any
) -> None:
    # psycopg keeps the parsed form of a statement (client-side binding) only up to these sizes,
    # and parses a larger one again at every execute.
    from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH, MAX_CACHED_STATEMENT_PARAMS

    settings.REALTIME_MAX_ACTIVE_CALLS_PER_KEY = 10
    key, _ = make_key("acme")
    webhook_services.endpoint_create(url="http://127.0.0.1:9/a", events=["call.ended"], api_key=key)
    sent: list[tuple[str, Any]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        call = make_call(key)
        services.call_answer(call=call, created=upstream.CreatedCall(upstream_id="rtc_1", sdp_answer="v=0"))
        services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
        services.call_note_upstream_closed(call=call, hung_up=True)

    combined = [(len(sql), len(params)) for sql, params in sent if sql.startswith("WITH")]
    if connection.vendor != "postgresql":
        assert combined == []  # SQLite runs each part on its own
        return
    assert len(combined) == 4
    assert [(n <= MAX_CACHED_STATEMENT_LENGTH, p <= MAX_CACHED_STATEMENT_PARAMS) for n, p in combined] == [(True, True)] * 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgresql
def test_it_records_a_call_without_a_capacity_check_as_one_statement_unless_an_endpoint_wants_it(
    sdp_offer: str, make_key: Callable[..., tuple[ApiKey, str]], settings: Any
) -> None:
    settings.REALTIME_MAX_ACTIVE_CALLS, settings.REALTIME_MAX_ACTIVE_CALLS_PER_KEY = 0, 0
    acme, _ = make_key("acme")
    other, _ = make_key("other")
    wants = webhook_services.endpoint_create(url="http://127.0.0.1:9/a", events=["call.created"], api_key=acme)
    session = parse_session({"voice": "echo", "instructions": "Bonjour", "temperature": 0.7})

    def opened(api_key: ApiKey) -> tuple[Call, list[str]]:
        with CaptureQueriesContext(connection) as queries:
            call = services.call_open(
                offer=sdp_offer, session=session, source=Call.Source.WEBRTC, actor=CallEvent.Actor.API, api_key=api_key
            )
        return call, _statements(queries)

    alone, alone_sent = opened(other)
    wanted, wanted_sent = opened(acme)

    if connection.vendor == "postgresql":
        assert alone_sent == ["WITH"]
        assert wanted_sent == ["WITH", "BEGIN", "WITH", "INSERT", "COMMIT"]
    for call in (alone, wanted):
        stored = Call.objects.get(pk=call.pk)
        assert [(f.attname, getattr(stored, f.attname)) for f in Call._meta.concrete_fields] == [
            (f.attname, getattr(call, f.attname)) for f in Call._meta.concrete_fields
        ]
        assert list(CallEvent.objects.filter(call=call).values_list("event_type", flat=True)) == ["call.created"]
    assert (stored.voice, stored.instructions, stored.temperature, stored.api_key_id) == ("echo", "Bonjour", 0.7, acme.pk)
    assert list(WebhookMessage.objects.values_list("endpoint_id", "call_id", "event_type")) == [(wants.pk, wanted.pk, "call.created")]
    assert counters.recount() == {row.pop("key"): row for row in _counters()}


def _outcome(write: Callable[[], Any]) -> str:
    try:
        with transaction.atomic():
            write()
    except DataError:
        return "refused"
    return "written"


@pytest.mark.django_db
@pytest.mark.postgresql
def test_it_refuses_a_value_too_long_for_its_column_as_the_orm_does(make_call: Callable[..., Call]) -> None:
    call = make_call()
    at = timezone.now()
    long_type = "x" * 81  # event_type holds 80

    orm = _outcome(lambda: CallEvent.objects.create(call=call, event_type=long_type, actor="api", data={}, created_at=at))
    event = CallEvent(call=call, event_type=long_type, actor="api", data={}, created_at=at)
    ours = _outcome(lambda: statements.transition(event, upserts=Tally(None).events(1).upserts(), endpoints=False))
    counted = _outcome(lambda: counters.add_rows({("all", "model", "m" * 101): {"calls": 1}}))
    tally = Tally(None).add("model", "m" * 101, calls=1)
    fine = CallEvent(call=call, event_type="call.note", actor="api", data={}, created_at=at)
    ours_counted = _outcome(lambda: statements.transition(fine, upserts=tally.upserts(), endpoints=False))

    # PostgreSQL refuses both (SQLite keeps any length): never cut to fit.
    assert ours == orm and ours_counted == counted
    assert orm == ("refused" if connection.vendor == "postgresql" else "written")


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgresql
def test_it_has_postgresql_plan_a_transition_once_per_connection(make_call: Callable[..., Call]) -> None:
    # Planning the transition's statement cost more than running it: PostgreSQL prepares it on
    # the connection, and after a few runs keeps one plan for it (a generic plan).
    for _ in range(8):
        make_call()

    if connection.vendor != "postgresql":
        assert Call.objects.count() == 8  # SQLite keeps its own statement cache
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements WHERE NOT from_sql")
        prepared = cursor.fetchall()
    assert [(sql.split(" ")[0], "realtime_call" in sql) for sql, _generic, _custom in prepared] == [("WITH", True)]
    assert prepared[0][1] >= 1 and prepared[0][2] <= 5
