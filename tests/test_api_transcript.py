"""GET /api/realtime/calls/{call_id}/transcript: the conversation in order, from recorded upstream events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from realtime import services
from realtime.models import Call


@pytest.fixture
def call(db: None) -> Call:
    return Call.objects.create(
        status=Call.Status.ACTIVE,
        upstream_id="rtc_u1_t",
        model="gpt-realtime",
        voice="marin",
        upstream_model="gpt-realtime",
        sdp_offer="v=0",
        created_at=timezone.now(),
    )


def _item(item_id: str, role: str, content: dict) -> dict:
    return {"item": {"id": item_id, "type": "message", "role": role, "content": [content]}}


@pytest.mark.django_db
def test_it_returns_the_turns_in_order_with_late_and_early_transcriptions(api, call):
    t0 = timezone.now()
    events = [
        # A transcription may arrive before the item it belongs to, or after the response.
        services.UpstreamEvent(
            "conversation.item.input_audio_transcription.completed", "e0", {"item_id": "u1", "transcript": "Bonjour"}, t0
        ),
        services.UpstreamEvent("conversation.item.done", "e1", _item("u1", "user", {"type": "input_audio", "transcript": None}), t0),
        services.UpstreamEvent(
            "conversation.item.done", "e2", _item("a1", "assistant", {"type": "output_audio", "transcript": "Salut"}), t0
        ),
        services.UpstreamEvent("conversation.item.done", "e3", _item("u2", "user", {"type": "input_text", "text": "Ça va ?"}), t0),
        services.UpstreamEvent("conversation.item.done", "e4", {"item": {"id": "f1", "type": "function_call", "name": "x"}}, t0),
        services.UpstreamEvent("conversation.item.done", "e5", _item("u3", "user", {"type": "input_audio", "transcript": None}), t0),
        services.UpstreamEvent(
            "conversation.item.input_audio_transcription.completed",
            "e6",
            {"item_id": "u3", "transcript": "Au revoir"},
            t0 + timedelta(seconds=2),
        ),
    ]
    services.call_record_events(call=call, events=events)

    response = api.get(f"/api/realtime/calls/{call.call_id}/transcript/")

    assert response.status_code == 200
    ts = int(t0.timestamp())
    assert response.json() == {
        "success": True,
        "call_id": call.call_id,
        "data": [
            {"item_id": "u1", "role": "user", "text": "Bonjour", "timestamp": ts},
            {"item_id": "a1", "role": "assistant", "text": "Salut", "timestamp": ts},
            {"item_id": "u2", "role": "user", "text": "Ça va ?", "timestamp": ts},
            {"item_id": "u3", "role": "user", "text": "Au revoir", "timestamp": ts},
        ],
        "count": 4,
    }
    assert api.get(f"/api/realtime/calls/{call.call_id}").json()["call"]["has_transcript"] is True


@pytest.mark.django_db
def test_it_returns_an_empty_transcript_for_a_call_without_one(api, call):
    body = api.get(f"/api/realtime/calls/{call.call_id}/transcript").json()

    assert body == {"success": True, "call_id": call.call_id, "data": [], "count": 0}
    detail = api.get(f"/api/realtime/calls/{call.call_id}").json()["call"]
    assert (detail["has_transcript"], detail["usage"], detail["cost_usd"]) == (False, {}, 0.0)


@pytest.mark.django_db
def test_it_answers_404_for_an_unknown_call(api):
    response = api.get("/api/realtime/calls/call_nope/transcript")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "call_not_found"
