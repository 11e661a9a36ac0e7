"""The support dashboard (`/admin/dashboard/`): staff only, its figures equal a recount of the
calls on a seeded history, its period selector, and every query it runs answered from an index."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db.models import Count, Q, Sum
from django.test import Client
from django.utils import timezone

from realtime import counters, dashboard, quality, services, upstream
from realtime.models import Call, CallEvent
from realtime.sessions import parse_session

from . import query_plans

URL = "/admin/dashboard/"


@pytest.fixture
def staff_client(db: None) -> Client:
    user = User.objects.create_user("sophie", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_call"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def seeded(transactional_db: None) -> dict[str, Any]:
    """A 90-day history written by the seeding tool users and benchmarks share (its bulk path)."""
    from bench import seed_scale

    return seed_scale.seed(calls=3000, events_per_call=10, chunk=500, seed_value=7, keys=2)


def _recount(first: date, last: date) -> dict[str, Any]:
    """The figures of a period, recounted from the calls themselves."""
    tz = timezone.get_current_timezone()
    start = datetime.combine(first, datetime.min.time(), tz)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tz)
    calls = Call.objects.filter(created_at__gte=start, created_at__lt=end)
    ended = Q(status=Call.Status.ENDED, duration_seconds__isnull=False)
    totals = calls.aggregate(
        calls=Count("id"),
        answered=Count("id", filter=Q(answered_at__isnull=False)),
        failed=Count("id", filter=Q(status=Call.Status.FAILED)),
        duration_calls=Count("id", filter=ended),
        seconds=Sum("duration_seconds", filter=ended),
        input_tokens=Sum("input_tokens", default=0),
        output_tokens=Sum("output_tokens", default=0),
        cost=Sum("cost_usd", default=Decimal(0)),
    )
    reasons = dict(calls.exclude(end_reason="").order_by().values_list("end_reason").annotate(n=Count("id")))
    models = {
        row["upstream_model"]: row
        for row in calls.order_by().values("upstream_model").annotate(n=Count("id"), cost=Sum("cost_usd"), tokens=Sum("input_tokens"))
    }
    per_day: dict[date, int] = {}
    for created in calls.values_list("created_at", flat=True):
        day = created.astimezone(tz).date()
        per_day[day] = per_day.get(day, 0) + 1
    durations = sorted(calls.filter(ended).values_list("duration_seconds", flat=True))
    # Measured turns per (day, model) and per model, from each call's own latency histogram.
    turns: dict[tuple[date | None, str], dict[str, int]] = {}
    for created, model, metrics in calls.values_list("created_at", "upstream_model", "metrics"):
        for bucket, n in (metrics.get("latency_histogram") or {}).items():
            for slot in (created.astimezone(tz).date(), None):
                histogram = turns.setdefault((slot, model), {})
                histogram[bucket] = histogram.get(bucket, 0) + n
    return {**totals, "reasons": reasons, "models": models, "per_day": per_day, "durations": durations, "turns": turns}


def test_it_shows_the_dashboard_to_staff_only(db, client, staff_client, settings):
    settings.LANGUAGE_CODE = "fr"  # the product's default (the suite runs in English)
    assert client.get(URL).status_code == 302  # to the sign-in page
    client.force_login(User.objects.create_user("visitor", password="pw"))
    assert client.get(URL).status_code == 302
    # Staff who may not see calls: refused, as the live feed would refuse them.
    client.force_login(User.objects.create_user("intern", password="pw", is_staff=True))
    assert client.get(URL).status_code == 403

    response = staff_client.get(URL)

    assert response.status_code == 200
    # In French unless the browser asks otherwise, and linked from the admin's start page.
    assert "Appels en cours" in response.content.decode()
    assert 'href="/admin/dashboard/"' in staff_client.get("/admin/").content.decode()
    english = staff_client.get(URL, headers={"accept-language": "en"}).content.decode()
    assert "Live calls now" in english and "Calls per hour" in english


def test_its_figures_equal_a_recount_of_the_calls(seeded, staff_client):
    today = timezone.localdate()
    first = today - timedelta(days=29)

    response = staff_client.get(URL, {"period": "30d"})

    data = response.context["data"]
    expected = _recount(first, today)
    assert data["calls"] == expected["calls"] > 500
    assert data["answered"] == expected["answered"]
    assert data["failed"] == expected["failed"] > 0
    assert data["answer_rate"] == round(100 * expected["answered"] / expected["calls"], 1)
    assert data["avg_duration"] == dashboard.minutes(expected["seconds"] / expected["duration_calls"])
    assert data["input_tokens"] == expected["input_tokens"] > 0 and data["output_tokens"] == expected["output_tokens"]
    assert data["cost"] == round(float(expected["cost"]), 2)
    assert {r["value"]: r["calls"] for r in data["reasons"]} == expected["reasons"]
    assert {m["model"]: m["calls"] for m in data["models"]} == {k: v["n"] for k, v in expected["models"].items()}
    assert {m["model"]: m["cost"] for m in data["models"]} == {k: round(float(v["cost"] or 0), 2) for k, v in expected["models"].items()}
    assert [(row["day"], row["calls"]) for row in data["daily"]] == [
        (first + timedelta(days=n), expected["per_day"].get(first + timedelta(days=n), 0)) for n in range(30)
    ]
    assert sum(row["calls"] for row in data["hourly"]) == expected["calls"]
    assert [row["total"] for row in data["cost_by_day"]] == [row["cost"] for row in data["daily"]]
    # The duration histogram is the calls' own; the p95 read from it lies in the exact p95's bucket.
    durations = expected["durations"]
    histogram = _histogram(durations)
    assert [d["calls"] for d in data["durations"]] == [histogram.get(str(e), 0) for e in counters.DURATION_EDGES] + [
        histogram.get("inf", 0)
    ]
    exact = durations[math.ceil(0.95 * len(durations)) - 1]
    p95 = dashboard.p95_seconds(histogram)
    assert p95 is not None and counters.duration_bucket(p95) == counters.duration_bucket(exact)
    assert data["p95_duration"] == dashboard.minutes(p95)
    # Turn latency per model and day: the figures of the calls' own histograms, summed.
    turns = expected["turns"]
    measured = sorted({model for _, model in turns})
    assert [m["model"] for m in data["latency"]["models"]] == measured and measured
    assert data["latency"]["models"] == [{"model": m, **dashboard.latency_figures(turns[(None, m)])} for m in measured]
    assert sum(m["turns"] for m in data["latency"]["models"]) > 100
    assert [row["models"] for row in data["latency"]["rows"]] == [
        [dashboard.latency_figures(turns.get((first + timedelta(days=n), m), {})) for m in measured] for n in range(30)
    ]
    charts = response.context["charts"]["latency"]
    assert charts["models"] == measured and len(charts["p95"][0]) == 30
    # The live figure is the calls in progress now.
    assert data["live"]["active"] == Call.objects.filter(status=Call.Status.ACTIVE).count() > 0
    # The page draws what it counted, and the numbers are there as tables too.
    page = response.content.decode()
    assert 'id="chart-hourly"' in page and 'id="table-hourly"' in page and 'id="dashboard-charts"' in page
    assert response.context["charts"]["daily"]["calls"] == [row["calls"] for row in data["daily"]]


def _histogram(durations: list[float]) -> dict[str, int]:
    out: dict[str, int] = {}
    for seconds in durations:
        out[counters.duration_bucket(seconds)] = out.get(counters.duration_bucket(seconds), 0) + 1
    return out


@pytest.mark.django_db
def test_it_counts_a_calls_measured_turns_once_in_its_hour_and_model(staff_client):
    call = services.call_open(offer="v=0", session=parse_session({"model": "gpt-realtime"}), source="webrtc", actor="api")
    services.call_answer(call=call, created=upstream.CreatedCall(upstream_id="rtc_1", sdp_answer="v=0"))
    meter = quality.TurnMeter()
    at = timezone.now()

    def turn(stop_ms: int, latency_ms: int) -> None:
        meter.add("input_audio_buffer.speech_started", {}, at + timedelta(milliseconds=stop_ms - 800))
        meter.add("input_audio_buffer.speech_stopped", {}, at + timedelta(milliseconds=stop_ms))
        meter.add("output_audio_buffer.started", {"response_id": f"r{stop_ms}"}, at + timedelta(milliseconds=stop_ms + latency_ms))
        meter.add("output_audio_buffer.stopped", {"response_id": f"r{stop_ms}"}, at + timedelta(milliseconds=stop_ms + latency_ms + 900))

    # Two turns, stored; the figures rewritten unchanged (a talk-time tick), then with a third
    # turn, then again at the end: each turn counts once.
    turn(1000, 450)
    turn(4000, 820)
    services.call_record_metrics(call=call, metrics=meter.metrics())
    services.call_record_metrics(call=call, metrics=meter.metrics(until=at + timedelta(seconds=7)))
    turn(8000, 1600)
    services.call_record_metrics(call=call, metrics=meter.metrics())
    services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
    services.call_record_metrics(call=call, metrics=meter.metrics(until=at + timedelta(seconds=12)))

    hour, model = counters.hour_of(call.created_at), call.upstream_model
    rows = {key: amounts["calls"] for key, amounts in counters.stored_hours().items() if key[0] == "latency"}
    assert rows == {("latency", hour, f"{bucket}:{model}"): 1 for bucket in ("500", "900", "2000")}
    assert counters.stored_hours() == counters.recount_hours()
    data = staff_client.get(URL).context["data"]
    row = next(r for r in data["latency"]["rows"] if r["label"] == f"{hour.astimezone(timezone.get_current_timezone()).hour:02d}:00")
    assert data["latency"]["models"] == [{"model": model, "turns": 3, "p50": 850, "p95": 1925}]
    assert row["models"] == [{"turns": 3, "p50": 850, "p95": 1925}]
    assert sum(r["models"][0]["turns"] for r in data["latency"]["rows"]) == 3
    page = staff_client.get(URL).content.decode()
    assert 'id="chart-latency"' in page and f'<th scope="row">{model}</th><td>850</td><td>1925</td><td>3</td>' in page

    # A stale rewrite (a monitor that saw fewer turns, during a takeover) takes back what it lacks.
    services.call_record_metrics(call=call, metrics={**meter.metrics(), "turns": 1, "latency_histogram": {"500": 1}})
    assert counters.stored_hours() == counters.recount_hours()
    assert staff_client.get(URL).context["data"]["latency"]["models"][0]["turns"] == 1


def test_it_reads_turn_latency_percentiles_from_the_histogram():
    assert dashboard.latency_figures({}) == {"turns": 0, "p50": None, "p95": None}
    # 20 turns: 10 in (400, 500], 10 in (800, 900]: the median at the first bucket's top, the p95
    # nine tenths into the second.
    assert dashboard.latency_figures({"500": 10, "900": 10}) == {"turns": 20, "p50": 500, "p95": 890}
    assert dashboard.latency_figures({"inf": 2}) == {"turns": 2, "p50": 5000, "p95": 5000}


def test_it_reads_the_p95_duration_from_the_histogram():
    assert dashboard.p95_seconds({}) is None
    # 100 calls: 90 under 5 s, 10 between 5 and 10 s: the 95th is half way into the second bucket.
    assert dashboard.p95_seconds({"5": 90, "10": 10}) == pytest.approx(7.5)
    assert dashboard.p95_seconds({"5": 1, "inf": 99}) == 3600.0
    assert dashboard.minutes(7.5) == "0:08" and dashboard.minutes(3725) == "1:02:05"


@pytest.mark.django_db
def test_it_counts_calls_as_they_happen(staff_client):
    session = parse_session({"model": "gpt-realtime"})
    answered = services.call_open(offer="v=0", session=session, source="webrtc", actor="api")
    services.call_answer(call=answered, created=upstream.CreatedCall(upstream_id="rtc_1", sdp_answer="v=0"))
    failed = services.call_open(offer="v=0", session=session, source="webrtc", actor="api")
    services.call_fail(call=failed, error=upstream.UpstreamError("refused"))

    data = staff_client.get(URL).context["data"]

    assert (data["calls"], data["answered"], data["failed"], data["answer_rate"]) == (2, 1, 1, 50.0)
    assert data["live"] == {"active": 1, "pending": 0}
    services.call_end(call=answered, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
    data = staff_client.get(URL).context["data"]
    assert data["live"] == {"active": 0, "pending": 0}
    assert {r["value"]: r["calls"] for r in data["reasons"]} == {"api_hangup": 1, "upstream_error": 1}
    assert sum(d["calls"] for d in data["durations"]) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "days"),
    [
        ({}, 1),
        ({"period": "today"}, 1),
        ({"period": "7d"}, 7),
        ({"period": "30d"}, 30),
        ({"period": "custom", "start": "2026-03-01", "end": "2026-03-31"}, 31),
    ],
)
def test_it_shows_the_period_asked_for(staff_client, query, days):
    response = staff_client.get(URL, query)

    period = response.context["period"]
    assert len(period.days) == days == len(response.context["data"]["daily"])
    # An hour per hour of the period, in the configured time zone (a DST change makes 23 or 25).
    assert len(response.context["data"]["hourly"]) in (24 * days - 1, 24 * days, 24 * days + 1)
    if query.get("period") == "custom":
        assert (period.first, period.last) == (date(2026, 3, 1), date(2026, 3, 31))
        assert period.hours()[0] == datetime(2026, 2, 28, 23, tzinfo=UTC)  # midnight in Paris
    else:
        assert period.last == timezone.localdate()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"period": "custom", "start": "2026-03-31", "end": "2026-03-01"}, "La période se termine avant de commencer."),
        ({"period": "custom", "start": "2026-01-01", "end": "2026-06-01"}, "Une période couvre au plus 31 jours."),
        ({"period": "custom", "start": "2026-01-01"}, "Donnez les deux dates d’une période au choix."),
    ],
)
def test_it_refuses_a_period_it_cannot_show_and_shows_today(staff_client, query, error):
    response = staff_client.get(URL, query, headers={"accept-language": "fr"})

    assert response.status_code == 200
    assert error in response.content.decode()
    assert response.context["period"].first == timezone.localdate()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query", [{"period": "today"}, {"period": "30d"}, {"period": "custom", "start": "2026-01-01", "end": "2026-01-31"}]
)
def test_it_answers_every_dashboard_query_from_an_index(staff_client, query):
    call = services.call_open(offer="v=0", session=parse_session({}), source="webrtc", actor="api")
    services.call_answer(call=call, created=upstream.CreatedCall(upstream_id="rtc_1", sdp_answer="v=0"))
    metrics = {"turns": 2, "latency_ms": {"p50": 700, "p95": 890, "max": 900}, "latency_histogram": {"500": 1, "900": 1}}
    services.call_record_metrics(call=call, metrics=metrics)
    services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)

    with query_plans.capture() as queries:
        response = staff_client.get(URL, query)

    assert response.status_code == 200
    # The period's sums, its hours, its models' hours, its latency histograms, and the slowest calls.
    assert query_plans.checked(queries) == 5
    # The slowest calls: the period's range is sorted only when the counters say it is small.
    assert query_plans.problems(queries, counted_ranges=True) == []


@pytest.mark.django_db
@pytest.mark.parametrize(("in_period", "in_history"), [(5, 1_000_000), (300_000, 1_000_000)], ids=["few in the period", "many"])
def test_it_reads_the_slowest_calls_the_cheaper_way_through_an_index(in_period, in_history):
    calls = [services.call_open(offer="v=0", session=parse_session({}), source="webrtc", actor="api") for _ in range(12)]
    for n, call in enumerate(calls):
        Call.objects.filter(pk=call.pk).update(latency_max_ms=100 * n if n else None)
    period = dashboard.period_of(dashboard.PeriodForm({"period": "today"}), timezone.localdate(), timezone.get_current_timezone())

    with query_plans.capture() as queries:
        slowest = list(dashboard.slowest_calls(period, in_period=in_period, in_history=in_history))

    # Slowest first, ten at most, only measured calls; either way from an index.
    assert [c.latency_max_ms for c in slowest] == [1100, 1000, 900, 800, 700, 600, 500, 400, 300, 200]
    assert (
        query_plans.checked(queries) == 1
        and query_plans.problems(queries, counted_ranges=dashboard.reads_period_first(in_period=in_period, in_history=in_history)) == []
    )
