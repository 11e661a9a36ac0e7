"""Models that exist after 2027-01-20: the catalogue, shutdown dates, successors, per-minute prices.

"Today" is pinned with time-machine; the embedded engine (another process) keeps its own clock.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.core.checks import Warning

from localrealtime import protocol
from realtime import services, sessions
from realtime.checks import models_shutting_down
from realtime.exceptions import InvalidInput
from realtime.models import Call, CallEvent

BEFORE_REALTIME_SHUTDOWN = dt.datetime(2027, 1, 19, 12, tzinfo=dt.UTC)
REALTIME_SHUTDOWN = dt.datetime(2027, 1, 20, 0, 0, 1, tzinfo=dt.UTC)
TRANSCRIPTION_SHUTDOWN = dt.datetime(2027, 2, 26, 9, tzinfo=dt.UTC)


def _create(api: Any, offer: str, session: dict[str, Any]) -> Any:
    return api.post("/api/realtime/calls", {"sdp": offer, "session": session}, format="json")


def test_it_defaults_to_gpt_realtime_2_1():
    config = sessions.parse_session({})

    assert (config.model, config.upstream_model, config.notes, config.warnings) == ("gpt-realtime-2.1", "gpt-realtime-2.1", [], [])


@pytest.mark.parametrize(
    ("seed", "served"),
    [
        ("gpt-4o-realtime-preview", "gpt-realtime-2.1"),
        ("gpt-4o-realtime-preview-2024-12-17", "gpt-realtime-2.1"),
        ("gpt-4o-mini-realtime-preview", "gpt-realtime-2.1-mini"),
    ],
)
def test_it_serves_the_seed_aliases_with_the_2_1_models(seed, served):
    config = sessions.parse_session({"model": seed})

    assert config.upstream_model == served
    assert config.notes == [{"field": "model", "requested": seed, "sent": served, "reason": "model_alias"}]
    assert config.warnings == []


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_warns_before_the_shutdown_date_in_the_answer_and_in_call_created(api, sdp_offer, pushes):
    with time_machine.travel(BEFORE_REALTIME_SHUTDOWN, tick=True):
        response = _create(api, sdp_offer, {"model": "gpt-realtime-mini-2025-12-15"})

    assert response.status_code == 201
    warning = {
        "code": "model_deprecated",
        "field": "model",
        "model": "gpt-realtime-mini-2025-12-15",
        "shutdown_date": "2027-01-20",
        "successor": "gpt-realtime-2.1-mini",
        "message": "'gpt-realtime-mini-2025-12-15' will be shut down by OpenAI on 2027-01-20. "
        "From that day, 'gpt-realtime-2.1-mini' will serve it.",
    }
    assert response.json()["warnings"] == [warning]
    call = Call.objects.get(call_id=response.json()["call_id"])
    assert call.upstream_model == "gpt-realtime-mini-2025-12-15"
    created = call.events.get(event_type="call.created")
    assert created.data["warnings"] == [warning]
    assert "adjustments" not in created.data
    assert pushes[0]["event"]["event_data"]["warnings"] == [warning]


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_sends_a_shut_down_model_as_its_successor_and_notes_it(api, sdp_offer):
    with time_machine.travel(REALTIME_SHUTDOWN, tick=True):
        response = _create(api, sdp_offer, {"model": "gpt-realtime"})

    assert response.status_code == 201
    body = response.json()
    assert "warnings" not in body
    assert body["model"] == "gpt-realtime"
    call = Call.objects.get(call_id=body["call_id"])
    assert (call.model, call.upstream_model, call.session_upstream["model"]) == ("gpt-realtime", "gpt-realtime-2.1", "gpt-realtime-2.1")
    created = call.events.get(event_type="call.created")
    assert created.data["adjustments"] == [
        {"field": "model", "requested": "gpt-realtime", "sent": "gpt-realtime-2.1", "reason": "model_shut_down"}
    ]


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_shut_down_model_without_a_successor(api, sdp_offer):
    with time_machine.travel(REALTIME_SHUTDOWN, tick=True):
        response = _create(api, sdp_offer, {"model": "gpt-audio-mini"})

    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": {
            "code": "model_shut_down",
            "message": "session.model: 'gpt-audio-mini' was shut down by OpenAI on 2027-01-20; choose another model.",
            "details": {"field": "session.model"},
        },
    }
    assert Call.objects.count() == 0


def test_it_refuses_the_shut_down_model_in_french(settings):
    settings.LANGUAGE_CODE = "fr"
    from django.utils import translation

    with time_machine.travel(REALTIME_SHUTDOWN), translation.override("fr"), pytest.raises(InvalidInput) as refused:
        sessions.parse_session({"model": "gpt-audio-mini"})

    assert refused.value.message == "session.model: « gpt-audio-mini » a été arrêté par OpenAI le 2027-01-20 ; choisissez un autre modèle."


@pytest.mark.parametrize("shape", ["ga", "beta"])
def test_it_warns_about_a_transcription_model_then_refuses_it(shape):
    session: dict[str, Any] = (
        {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}
        if shape == "ga"
        else {"input_audio_transcription": {"model": "whisper-1"}}
    )
    with time_machine.travel(dt.datetime(2027, 2, 25, tzinfo=dt.UTC)):
        config = sessions.parse_session(session)
    with time_machine.travel(TRANSCRIPTION_SHUTDOWN), pytest.raises(InvalidInput) as refused:
        sessions.parse_session(session)

    assert config.warnings == [
        {
            "code": "model_deprecated",
            "field": "audio.input.transcription.model",
            "model": "whisper-1",
            "shutdown_date": "2027-02-26",
            "successor": None,
            "message": "'whisper-1' will be shut down by OpenAI on 2027-02-26.",
        }
    ]
    assert config.upstream["audio"]["input"]["transcription"] == {"model": "whisper-1"}
    assert refused.value.details == {"field": "session.audio.input.transcription.model"}


def test_it_sends_a_shut_down_transcription_model_to_a_configured_successor(settings):
    settings.REALTIME_MODEL_SUCCESSORS = {**settings.REALTIME_MODEL_SUCCESSORS, "gpt-4o-mini-transcribe": "gpt-realtime-whisper"}
    session = {"input_audio_transcription": {"model": "gpt-4o-mini-transcribe-2025-12-15"}}

    with time_machine.travel(TRANSCRIPTION_SHUTDOWN):
        config = sessions.parse_session(session)

    assert config.upstream["audio"]["input"]["transcription"] == {"model": "gpt-realtime-whisper"}
    assert config.notes == [
        {
            "field": "audio.input.transcription.model",
            "requested": "gpt-4o-mini-transcribe-2025-12-15",
            "sent": "gpt-realtime-whisper",
            "reason": "model_shut_down",
        }
    ]
    # The validated input is not rewritten: the call keeps what was asked.
    assert config.requested == session


@pytest.mark.django_db
def test_it_prices_a_per_minute_model_by_the_call_duration(sdp_offer):
    with time_machine.travel(dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC), tick=False) as clock:
        call = services.call_open(
            offer=sdp_offer,
            session=sessions.parse_session({"model": "gpt-realtime-translate"}),
            source=Call.Source.WEBRTC,
            actor=CallEvent.Actor.API,
        )
        clock.shift(dt.timedelta(seconds=90))
        services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)

    call.refresh_from_db()
    assert call.duration_seconds == 90
    # 1.5 minutes at $0.034.
    assert call.cost_usd == Decimal("0.051000")


@pytest.mark.django_db
def test_it_lists_the_catalogue_with_each_models_status_today(api):
    with time_machine.travel(REALTIME_SHUTDOWN, tick=True):
        response = api.get("/api/realtime/models")

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["default_model"] == "gpt-realtime-2.1"
    assert body["aliases"]["gpt-4o-realtime-preview"] == "gpt-realtime-2.1"
    models = {model["name"]: model for model in body["models"]}
    assert models["gpt-realtime"] == {
        "name": "gpt-realtime",
        "kind": "realtime",
        "snapshots": ["gpt-realtime-2025-08-28"],
        "shutdown_date": "2027-01-20",
        "successor": "gpt-realtime-2.1",
        "replacement": None,
        "modalities": {"input": ["text", "audio", "image"], "output": ["text", "audio"]},
        "usd_per_million_tokens": {
            "text_in": 4.0,
            "text_cached": 0.4,
            "text_out": 16.0,
            "audio_in": 32.0,
            "audio_cached": 0.4,
            "audio_out": 64.0,
            "image_in": 5.0,
            "image_cached": 0.5,
        },
        "usd_per_minute": None,
        "status": "shut_down",
    }
    assert models["gpt-realtime-2.1"]["status"] == "available"
    assert models["gpt-realtime-translate"]["usd_per_minute"] == 0.034
    assert (models["whisper-1"]["kind"], models["whisper-1"]["status"]) == ("transcription", "deprecated")
    assert (models["gpt-4o-realtime-preview"]["status"], models["gpt-4o-realtime-preview"]["replacement"]) == (
        "retired",
        "gpt-realtime-2.1",
    )


@pytest.mark.django_db
def test_it_shows_the_catalogue_to_staff_in_the_admin(admin_client, client):
    page = admin_client.get("/admin/realtime/models/")
    anonymous = client.get("/admin/realtime/models/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "gpt-realtime-2.1-mini" in html
    assert "2027-01-20" in html
    assert anonymous.status_code == 302


@pytest.mark.parametrize(
    ("today", "warned"),
    [(dt.datetime(2026, 12, 20, tzinfo=dt.UTC), False), (dt.datetime(2026, 12, 21, tzinfo=dt.UTC), True)],
)
def test_it_warns_in_check_when_a_configured_model_shuts_down_within_30_days(settings, today, warned):
    settings.REALTIME_DEFAULT_MODEL = "gpt-realtime"
    settings.REALTIME_MODEL_ALIASES = {"maison": "gpt-realtime-mini"}

    with time_machine.travel(today):
        found = models_shutting_down()

    expected = [
        Warning(
            "REALTIME_DEFAULT_MODEL is 'gpt-realtime', which OpenAI shuts down on 2027-01-20.",
            hint="Point it at 'gpt-realtime-2.1'.",
            id="realtime.W001",
        ),
        Warning(
            "REALTIME_MODEL_ALIASES['maison'] is 'gpt-realtime-mini', which OpenAI shuts down on 2027-01-20.",
            hint="Point it at 'gpt-realtime-2.1-mini'.",
            id="realtime.W001",
        ),
    ]
    assert found == (expected if warned else [])


def test_it_never_warns_about_the_shipped_configuration():
    with time_machine.travel(dt.datetime(2027, 1, 19, tzinfo=dt.UTC)):
        assert models_shutting_down() == []


@pytest.mark.parametrize("model", ["gpt-realtime-2.1", "gpt-realtime-2.1-mini", "gpt-realtime-translate"])
def test_it_is_accepted_by_the_local_engine(model):
    assert protocol.check_session({"type": "realtime", "model": model})["model"] == model
