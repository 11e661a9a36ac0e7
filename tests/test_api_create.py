"""POST /api/realtime/calls: both body encodings, both session shapes, every refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from realtime.models import Call, CallEvent

SEED_SESSION = {
    "model": "gpt-4o-realtime-preview",
    "modalities": ["text", "audio"],
    "voice": "alloy",
    "instructions": "Tu es un assistant vocal utile.",
}


def _create(api: Any, offer: str, session: Any = None, **extra: Any) -> Any:
    body: dict[str, Any] = {"sdp": offer, **extra}
    if session is not None:
        body["session"] = session
    return api.post("/api/realtime/calls", body, format="json")


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_creates_a_call_from_the_seed_json_example(api, sdp_offer, pushes):
    response = _create(api, sdp_offer, SEED_SESSION)

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"success", "call_id", "sdp_answer", "model", "status", "created_at", "session"}
    assert body["success"] is True
    assert body["call_id"].startswith("call_")
    assert body["sdp_answer"].startswith("v=0")
    assert body["model"] == "gpt-4o-realtime-preview"
    assert body["status"] == "active"
    assert isinstance(body["created_at"], int)
    assert body["session"] == {"model": "gpt-4o-realtime-preview", "voice": "alloy", "modalities": ["text", "audio"]}

    call = Call.objects.get(call_id=body["call_id"])
    assert call.status == Call.Status.ACTIVE
    assert call.upstream_id.startswith("rtc_")
    # It should keep what was asked for and what was sent upstream (GA, translated).
    assert call.session_requested == SEED_SESSION
    assert call.session_upstream == {
        "type": "realtime",
        "model": "gpt-realtime-2.1",
        "output_modalities": ["audio"],
        "audio": {"output": {"voice": "alloy"}},
        "instructions": "Tu es un assistant vocal utile.",
    }
    assert list(call.events.values_list("event_type", flat=True)) == ["call.created", "call.answered"]
    # One push per transition: created, then answered.
    assert [p["event"]["event_type"] for p in pushes] == ["call.created", "call.answered"]
    assert pushes[-1]["call"]["status"] == "active"


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_creates_a_call_from_multipart_with_the_seed_session(api, sdp_offer):
    session = dict(SEED_SESSION, type="realtime", temperature=0.8)
    response = api.post("/api/realtime/calls", {"sdp": sdp_offer, "session": json.dumps(session)}, format="multipart")

    assert response.status_code == 201
    call = Call.objects.get(call_id=response.json()["call_id"])
    assert call.temperature == 0.8
    assert "temperature" not in call.session_upstream
    created = call.events.get(event_type="call.created")
    # It should note, on the call's audit trail, what could not be passed on as asked.
    assert {"field": "temperature", "requested": 0.8, "sent": None, "reason": "not_supported_upstream"} in created.data["adjustments"]


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_accepts_the_offer_as_an_uploaded_file(api, sdp_offer):
    upload = SimpleUploadedFile("offer.sdp", sdp_offer.encode(), content_type="application/sdp")
    response = api.post("/api/realtime/calls", {"sdp": upload}, format="multipart")

    assert response.status_code == 201
    assert response.json()["session"] == {"model": "gpt-realtime-2.1", "voice": "alloy", "modalities": ["text", "audio"]}


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_accepts_the_ga_session_shape(api, sdp_offer):
    session = {
        "type": "realtime",
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "audio": {"output": {"voice": "marin"}, "input": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}},
        "max_output_tokens": 1024,
    }
    response = _create(api, sdp_offer, session)

    assert response.status_code == 201
    call = Call.objects.get(call_id=response.json()["call_id"])
    assert (call.model, call.voice, call.modalities, call.max_output_tokens) == ("gpt-realtime", "marin", ["audio"], 1024)
    assert call.session_upstream == session
    assert "adjustments" not in call.events.get(event_type="call.created").data


@pytest.mark.parametrize(
    ("session", "field"),
    [
        ({"voice": "bob"}, "session.voice"),
        ({"model": "gpt-3.5-turbo"}, "session.model"),
        ({"temperature": 2.0}, "session.temperature"),
        ({"temperature": "hot"}, "session.temperature"),
        ({"modalities": ["video"]}, "session.modalities[0]"),
        ({"modalities": []}, "session.modalities"),
        ({"output_modalities": ["text", "audio"]}, "session.output_modalities"),
        ({"max_response_output_tokens": 0}, "session.max_response_output_tokens"),
        ({"max_output_tokens": 5000}, "session.max_output_tokens"),
        ({"instructions": 42}, "session.instructions"),
        ({"colour": "blue"}, "session.colour"),
        ({"audio": {"output": {"speed": 3}}}, "session.audio.output.speed"),
        ({"audio": {"output": {"pitch": 1}}}, "session.audio.output.pitch"),
        ({"voice": "alloy", "audio": {"output": {"voice": "marin"}}}, "session.voice"),
        ({"type": "transcription"}, "session.type"),
        ("not json", "session"),
        ([1, 2], "session"),
    ],
)
@pytest.mark.django_db
def test_it_refuses_an_invalid_session_naming_the_field(api, sdp_offer, session, field):
    response = _create(api, sdp_offer, session)

    assert response.status_code == 400
    error = response.json()["error"]
    assert response.json()["success"] is False
    assert error["code"] == "invalid_request"
    assert error["details"]["field"] == field
    assert error["message"].startswith(field)
    # It should write nothing.
    assert not Call.objects.exists() and not CallEvent.objects.exists()


@pytest.mark.parametrize(
    ("sdp", "needle"),
    [
        ("", "v=0"),
        ("hello", "v=0"),
        ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "m=audio"),
        (42, "string"),
    ],
)
@pytest.mark.django_db
def test_it_refuses_an_invalid_offer(api, sdp, needle):
    response = _create(api, sdp)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_sdp"
    assert response.json()["error"]["details"]["field"] == "sdp"
    assert needle in response.json()["error"]["message"]
    assert not Call.objects.exists()


@pytest.mark.parametrize("missing", ["a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"])
@pytest.mark.django_db
def test_it_refuses_an_offer_without_ice_or_dtls(api, sdp_offer, missing):
    offer = "\r\n".join(line for line in sdp_offer.split("\r\n") if not line.startswith(missing))

    response = _create(api, offer)

    assert response.status_code == 400
    assert missing.rstrip(":") in response.json()["error"]["message"]
    assert not Call.objects.exists()


@pytest.mark.django_db
def test_it_requires_the_offer(api):
    response = api.post("/api/realtime/calls", {"session": SEED_SESSION}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "sdp"


@pytest.mark.django_db
def test_it_refuses_unknown_top_level_fields(api, sdp_offer):
    response = _create(api, sdp_offer, callback="http://example.test")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "callback"


@pytest.mark.django_db
def test_it_refuses_broken_json(api):
    response = api.generic("POST", "/api/realtime/calls", '{"sdp": ', content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_request"


@pytest.mark.django_db
def test_it_refuses_other_content_types(api, sdp_offer):
    response = api.generic("POST", "/api/realtime/calls", sdp_offer, content_type="text/plain")

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.django_db
def test_it_refuses_a_body_over_the_cap(api, settings, sdp_offer):
    response = _create(api, sdp_offer, {"instructions": "x" * settings.REALTIME_MAX_BODY_BYTES})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not Call.objects.exists()


@pytest.mark.django_db
def test_it_refuses_an_offer_over_the_sdp_cap(api, settings, sdp_offer):
    settings.REALTIME_MAX_SDP_BYTES = 1000

    response = _create(api, sdp_offer + "a=x-padding:" + "x" * 1000 + "\r\n")

    assert response.status_code == 413
    assert response.json()["error"]["details"]["field"] == "sdp"
