"""GET /api/realtime/calls: every filter, `q`, each ordering with its cursor, the count, and the
400s for unknown parameters and bad values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from realtime import services, upstream
from realtime.models import ApiKey, Call, CallEvent, CallWord
from realtime.sessions import parse_session

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _said(call: Call, text: str, event_id: str) -> None:
    """A transcribed turn, as a monitor stores it."""
    item = {"id": f"item_{event_id}", "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": text}]}
    services.call_record_events(call=call, events=[services.UpstreamEvent("conversation.item.done", event_id, {"item": item}, NOW)])


@pytest.fixture
def calls(db: None) -> dict[str, Any]:
    """Five calls with distinct figures: made through the services; the figures the quality
    monitor and the clock would give them (duration, latency, creation time) set on the rows."""
    key = ApiKey(name="integrator")
    raw = services.api_key_create(key, by=services.SYSTEM)
    made: dict[str, Call] = {}
    specs = [
        # name, model, voice, key, minutes ago, duration, cost, latency
        ("a", "gpt-realtime", "alloy", key, 50, 30.0, "0.010000", 900),
        ("b", "gpt-realtime-mini", "echo", key, 40, 120.0, "0.250000", None),
        ("c", "gpt-realtime", "echo", None, 30, 600.0, "1.500000", 2400),
        ("d", "gpt-realtime-mini", "alloy", None, 20, None, "0.000000", None),
    ]
    for name, model, voice, owner, ago, duration, cost, latency in specs:
        call = services.call_open(
            offer="v=0", session=parse_session({"model": model, "voice": voice}), source="webrtc", actor="api", api_key=owner
        )
        services.call_answer(call=call, created=upstream.CreatedCall(upstream_id=f"rtc_{name}{name}123", sdp_answer="v=0"))
        if duration is not None:
            services.call_end(
                call=call, reason=Call.EndReason.API_HANGUP if name != "c" else Call.EndReason.IDLE_TIMEOUT, actor=CallEvent.Actor.API
            )
        figures = {"created_at": NOW - timedelta(minutes=ago), "cost_usd": Decimal(cost), "latency_p95_ms": latency}
        if duration is not None:
            figures["duration_seconds"] = duration
        Call.objects.filter(pk=call.pk).update(**figures)
        made[name] = Call.objects.get(pk=call.pk)
    decision = services.SipDecision(accept=True, session=parse_session({}))
    phone = services.sip_call_receive(
        webhook_id="wh_1", upstream_id="rtc_phone1", caller="+33140000001", called="+33180000002", headers=[], decision=decision
    )
    assert phone is not None
    Call.objects.filter(pk=phone.pk).update(created_at=NOW - timedelta(minutes=10), cost_usd=None)
    made["phone"] = Call.objects.get(pk=phone.pk)
    _said(made["a"], "Bonjour, je voudrais suivre mon colis.", "ev_1")
    _said(made["c"], "Où est mon COLIS ? L'électricité est coupée.", "ev_2")
    _said(made["phone"], "Je voudrais parler à un conseiller.", "ev_3")
    return {"key": key, "raw": raw, **made}


def _ids(api: Any, **params: Any) -> list[str]:
    response = api.get("/api/realtime/calls", params)
    assert response.status_code == 200, response.json()
    return [c["call_id"] for c in response.json()["data"]]


def _names(calls: dict[str, Any], ids: list[str]) -> list[str]:
    by_id = {c.call_id: name for name, c in calls.items() if isinstance(c, Call)}
    return [by_id[i] for i in ids]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["phone", "d", "c", "b", "a"]),
        ({"status": "ended"}, ["c", "b", "a"]),
        ({"source": "sip"}, ["phone"]),
        ({"model": "gpt-realtime-mini"}, ["d", "b"]),
        ({"voice": "echo"}, ["c", "b"]),
        ({"end_reason": "idle_timeout"}, ["c"]),
        ({"created_after": int((NOW - timedelta(minutes=35)).timestamp())}, ["phone", "d", "c"]),
        ({"created_before": "2026-03-01T11:25:00Z"}, ["b", "a"]),
        ({"created_after": "2026-03-01T11:15:00+00:00", "created_before": "2026-03-01T11:45:00"}, ["d", "c", "b"]),
        ({"min_duration": 100}, ["c", "b"]),
        ({"max_duration": 120}, ["b", "a"]),
        ({"min_duration": 60, "max_duration": 300}, ["b"]),
        ({"min_cost": "0.25"}, ["c", "b"]),
        ({"min_latency": 1000}, ["c"]),
        ({"caller": "+3314"}, ["phone"]),
        ({"caller": "+44"}, []),
        ({"q": "colis"}, ["c", "a"]),
        ({"q": "Électricité colis"}, ["c"]),
        ({"q": "voudrais"}, ["phone", "a"]),
        ({"q": "colis absent"}, []),
        ({"q": "rtc_bb"}, ["b"]),
        ({"q": "+33 1 40"}, ["phone"]),
        ({"q": "tel:+33 (1) 40.00"}, ["phone"]),
        ({"q": "33140"}, []),
        ({"model": "gpt-realtime", "voice": "echo"}, ["c"]),
        ({"status": "ended", "voice": "alloy", "min_cost": "0.001"}, ["a"]),
    ],
)
def test_it_filters_the_list(api, calls, params, expected):
    assert _names(calls, _ids(api, **params)) == expected


def test_it_finds_a_call_by_its_id_or_the_beginning_of_it(api, calls):
    call_id = calls["b"].call_id

    assert _names(calls, _ids(api, q=call_id)) == ["b"]
    assert "b" in _names(calls, _ids(api, q=call_id[:12]))


def test_it_filters_by_api_key_for_staff_and_keeps_a_key_to_its_own_calls(api, calls, make_key):
    _, other_raw = make_key("other")
    prefix = calls["key"].prefix

    assert _names(calls, _ids(api, api_key=prefix)) == ["b", "a"]
    assert _ids(api, api_key="iap_nothing") == []
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {other_raw}")
    assert _ids(api) == []
    assert _ids(api, api_key=prefix) == []
    body = api.get("/api/realtime/calls", {"api_key": prefix}).json()
    assert body["count"] == 0


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("-created_at", ["phone", "d", "c", "b", "a"]),
        ("created_at", ["a", "b", "c", "d", "phone"]),
        ("-duration", ["c", "b", "a"]),
        ("duration", ["a", "b", "c"]),
        ("-cost", ["c", "b", "a", "d"]),
        ("cost", ["d", "a", "b", "c"]),
        ("-latency", ["c", "a"]),
        ("latency", ["a", "c"]),
    ],
)
def test_it_orders_and_pages_through_each_order_with_the_cursor(api, calls, ordering, expected):
    assert _names(calls, _ids(api, ordering=ordering)) == expected
    seen, params = [], {"limit": 1, "ordering": ordering}
    while True:
        body = api.get("/api/realtime/calls", params).json()
        seen += [c["call_id"] for c in body["data"]]
        if "next_cursor" not in body:
            break
        params = {**params, "cursor": body["next_cursor"]}
    assert _names(calls, seen) == expected


def test_it_resumes_inside_a_run_of_equal_values(api, calls):
    Call.objects.update(cost_usd=Decimal("0.5"))
    first = api.get("/api/realtime/calls", {"ordering": "-cost", "limit": 2}).json()
    rest = api.get("/api/realtime/calls", {"ordering": "-cost", "limit": 10, "cursor": first["next_cursor"]}).json()

    ids = [c["call_id"] for c in first["data"] + rest["data"]]
    assert _names(calls, ids) == ["phone", "d", "c", "b", "a"]


def test_it_refuses_a_cursor_of_another_ordering(api, calls):
    cursor = api.get("/api/realtime/calls", {"limit": 1}).json()["next_cursor"]

    response = api.get("/api/realtime/calls", {"limit": 1, "ordering": "-cost", "cursor": cursor})

    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"field": "cursor"}


def test_it_counts_from_the_counters_or_up_to_a_cap(api, calls, settings, monkeypatch):
    assert api.get("/api/realtime/calls").json()["count"] == 5
    assert api.get("/api/realtime/calls", {"voice": "echo"}).json()["count"] == 2
    assert api.get("/api/realtime/calls", {"end_reason": "idle_timeout"}).json()["count"] == 1
    body = api.get("/api/realtime/calls", {"voice": "echo", "min_cost": "1", "limit": 1}).json()
    assert body["count"] == 1 and "count_capped" not in body
    monkeypatch.setattr("realtime.selectors.COUNT_CAP", 2)
    capped = api.get("/api/realtime/calls", {"min_cost": "0.001", "limit": 1}).json()
    assert capped["count"] == 2 and capped["count_capped"] is True
    assert len(capped["data"]) == 1 and "next_cursor" in capped


def test_it_indexes_the_words_of_each_transcript_once_through_the_services(calls):
    words = set(CallWord.objects.filter(call=calls["c"]).values_list("word", flat=True))

    assert words == {"ou", "est", "mon", "colis", "electricite", "coupee"}
    _said(calls["c"], "Mon colis, encore mon colis.", "ev_4")
    assert CallWord.objects.filter(call=calls["c"], word="colis").count() == 1
    assert CallWord.objects.filter(call=calls["c"], word="encore").count() == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("created_after=yesterday", "created_after"),
        ("created_before=2026-13-01", "created_before"),
        ("model=" + "m" * 101, "model"),
        ("end_reason=bored", "end_reason"),
        ("min_duration=-1", "min_duration"),
        ("max_duration=long", "max_duration"),
        ("min_cost=cheap", "min_cost"),
        ("min_latency=1.5", "min_latency"),
        ("ordering=name", "ordering"),
        ("ordering=-id", "ordering"),
        ("q=" + "x" * 201, "q"),
    ],
)
@pytest.mark.django_db
def test_it_refuses_a_bad_value_naming_the_field(api, query, field):
    response = api.get(f"/api/realtime/calls?{query}")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == field


@pytest.mark.django_db
def test_it_refuses_unknown_parameters_naming_them(api):
    response = api.get("/api/realtime/calls?statut=ended&limit=2&mdoel=x")

    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": {
            "code": "invalid_request",
            "message": "unknown parameter: mdoel, statut.",
            "details": {"field": "mdoel", "unknown": ["mdoel", "statut"]},
        },
    }
