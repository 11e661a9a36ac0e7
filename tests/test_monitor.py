"""Sideband monitoring end to end: a caller speaks a real clip through our API and the local engine,
and the embedded monitor records speech, transcript, usage and cost, then the call's end.

The server here runs with monitors embedded (REALTIME_MONITORS=embedded), as `make run` does.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings

from localrealtime.caller import Caller, QueuedAudioTrack, load_clip
from realtime.models import Call, CallEvent
from tests.conftest import Server, start_server, stop_server
from tests.polling import wait_until

SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "Repeat what you hear.",
    "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}, "output": {"voice": "marin"}},
}


@pytest.fixture(scope="module")
def monitored_server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("monitored"),
        extra_env={"REALTIME_MONITORS": "embedded", "REALTIME_MONITOR_LEASE_SECONDS": "3", "REALTIME_MONITOR_FLUSH_MS": "50"},
    )
    yield server
    stop_server(server)


@pytest.fixture
def engine(monitored_server: Server, settings: Any) -> Server:
    """Calls created by this test go to the monitored server's engine."""
    settings.OPENAI_BASE_URL = monitored_server.engine_url
    return monitored_server


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """A real spoken sentence, synthesized (no punctuation: no pause long enough to end a turn)."""
    wav = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), "hello this is a test of the realtime call manager"], check=True, timeout=30)
    return load_clip(str(wav))


def _types(call: Call) -> list[str]:
    return list(CallEvent.objects.filter(call=call).order_by("id").values_list("event_type", flat=True))


def _count(call: Call, event_type: str) -> int:
    return CallEvent.objects.filter(call=call, event_type=event_type).count()


async def _dial(api: Any, track: QueuedAudioTrack) -> tuple[Caller, Call]:
    caller = Caller(audio=track)
    response = await sync_to_async(api.post)("/api/realtime/calls", {"sdp": await caller.offer(), "session": SESSION}, format="json")
    assert response.status_code == 201, response.content
    await caller.accept(response.json()["sdp_answer"])
    call = await sync_to_async(Call.objects.get)(call_id=response.json()["call_id"])
    # The monitor attaches on its own: its first event is the sideband's session.created.
    await wait_until(lambda: _count(call, "session.created"))
    return caller, call


def _expected_cost(usages: list[dict[str, Any]], prices: dict[str, float]) -> Decimal:
    """OpenAI's accounting, computed independently of realtime.pricing."""
    total = Decimal(0)
    for usage in usages:
        details, cached = usage["input_token_details"], usage["input_token_details"]["cached_tokens_details"]
        for modality in ("text", "audio"):
            hits = cached[f"{modality}_tokens"]
            total += (details[f"{modality}_tokens"] - hits) * Decimal(str(prices[f"{modality}_in"]))
            total += hits * Decimal(str(prices[f"{modality}_cached"]))
        for modality in ("text", "audio"):
            total += usage["output_token_details"][f"{modality}_tokens"] * Decimal(str(prices[f"{modality}_out"]))
    return total / 1_000_000


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_records_a_spoken_conversation_then_the_caller_hanging_up(engine, api, speech):
    track = QueuedAudioTrack()
    caller, call = await _dial(api, track)
    try:
        await caller.wait_for(lambda: caller.connected.is_set(), within=20)
        track.play(speech)
        # Long enough for the engine's spoken echo to end: speaking over it would cut it (barge-in).
        track.silence(6.0)
        track.play(speech)
        await wait_until(lambda: _count(call, "response.done") == 2 and _count(call, "rate_limits.updated") == 2, within=40)
        # The caller leaves: closing its peer connection is all OpenAI (here, the engine) sees.
        await caller.close()
        # Ended, then (its own transaction) the upstream side noted closed.
        ended_and_closed = Call.objects.filter(pk=call.pk, status=Call.Status.ENDED, upstream_closed_at__isnull=False)
        await wait_until(ended_and_closed.exists, within=20)
    finally:
        await caller.close()

    await sync_to_async(call.refresh_from_db)()
    types = await sync_to_async(_types)(call)
    # It should record each turn's speech, commit, transcription and response, and no deltas.
    for event_type in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio_transcript.done",
        "response.done",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "rate_limits.updated",
    ):
        assert types.count(event_type) == 2, event_type
    assert types.count("conversation.item.done") == 4  # two user turns, two echoes
    assert types.count("session.created") == 1
    assert not [t for t in types if t.endswith(".delta")]
    done = await sync_to_async(CallEvent.objects.filter(call=call, event_type="response.output_audio_transcript.done").first)()
    assert done.actor == CallEvent.Actor.UPSTREAM
    assert done.data["deltas"] >= 1
    assert done.upstream_event_id.startswith("event_")

    # It should end the call exactly once, as hung up remotely, with the upstream side noted closed.
    assert call.status == Call.Status.ENDED
    assert call.end_reason == Call.EndReason.REMOTE_HANGUP
    assert types.count("call.ended") == 1
    ended = await sync_to_async(CallEvent.objects.get)(call=call, event_type="call.ended")
    assert (ended.actor, ended.data["reason"], ended.data["upstream"]) == ("upstream", "remote_hangup", "call_gone")
    assert call.upstream_closed_at is not None

    # It should sum usage from the two response.done events and price it to the cent.
    usages = [
        e["response"]["usage"]
        for e in await sync_to_async(list)(CallEvent.objects.filter(call=call, event_type="response.done").values_list("data", flat=True))
    ]
    assert usages[1]["input_token_details"]["cached_tokens"] > 0  # the second turn re-sends the first, cached
    assert call.input_tokens == sum(u["input_tokens"] for u in usages)
    assert call.output_tokens == sum(u["output_tokens"] for u in usages)
    assert call.usage["responses"] == 2
    assert call.usage["output_token_details"]["audio_tokens"] == sum(u["output_token_details"]["audio_tokens"] for u in usages)
    transcription_tokens = call.usage["transcription"]["input_tokens"]
    assert transcription_tokens == usages[0]["input_token_details"]["audio_tokens"] + (
        usages[1]["input_token_details"]["audio_tokens"]
        - usages[0]["input_token_details"]["audio_tokens"]
        - usages[0]["output_token_details"]["audio_tokens"]
    )
    expected = _expected_cost(usages, django_settings.REALTIME_PRICING["gpt-realtime"])
    assert expected > 0
    assert round(call.cost_usd, 2) == round(expected, 2)
    assert abs(call.cost_usd - expected) < Decimal("0.000001")

    # It should serve the transcript in order, and say on the call detail that it exists.
    body = (await sync_to_async(api.get)(f"/api/realtime/calls/{call.call_id}/transcript")).json()
    assert body["success"] is True and body["count"] == 4
    assert [e["role"] for e in body["data"]] == ["user", "assistant", "user", "assistant"]
    user_text = body["data"][0]["text"]
    assert user_text.startswith("[") and user_text.endswith(" s of speech]")
    assert body["data"][1]["text"] == f"[echo] {user_text}"
    detail = (await sync_to_async(api.get)(f"/api/realtime/calls/{call.call_id}")).json()["call"]
    assert detail["has_transcript"] is True
    assert detail["usage"]["input_tokens"] == call.input_tokens
    assert detail["cost_usd"] == round(float(expected), 6)
    stats = (await sync_to_async(api.get)("/api/realtime/stats")).json()["stats"]
    assert stats["total_cost_usd"] == round(float(expected), 6)
    assert stats["usage_by_model"]["gpt-realtime"] == {
        "calls": 1,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "cost_usd": round(float(expected), 6),
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_reconnects_when_the_sideband_drops_while_the_call_is_alive(engine, api):
    track = QueuedAudioTrack()
    caller, call = await _dial(api, track)
    try:
        await caller.wait_for(lambda: caller.connected.is_set(), within=20)
        dropped = await sync_to_async(engine.engine)("POST", f"calls/{call.upstream_id}/drop_sideband")
        assert dropped.json() == {"dropped": 1}
        # It should reconnect: a second sideband session, the call still active.
        await wait_until(lambda: _count(call, "session.created") == 2)
        track.tone(1.0)
        await wait_until(lambda: _count(call, "response.done") == 1, within=20)
        assert (await sync_to_async(Call.objects.get)(pk=call.pk)).status == Call.Status.ACTIVE
        described = (await sync_to_async(engine.engine)("GET", f"calls/{call.upstream_id}")).json()
        assert (described["sideband_connections"], described["sideband_sockets"]) == (2, 1)

        # Ended through the API: the monitor sees its socket close and stops; one call.ended only.
        response = await sync_to_async(api.delete)(f"/api/realtime/calls/{call.call_id}")
        assert response.status_code == 200
        await wait_until(lambda: engine.engine("GET", f"calls/{call.upstream_id}").json()["sideband_sockets"] == 0)
        await asyncio.sleep(1.0)  # a monitor that wrongly reconnected would have ended it again by now
        assert await sync_to_async(_count)(call, "call.ended") == 1
        ended = await sync_to_async(CallEvent.objects.get)(call=call, event_type="call.ended")
        assert ended.data["reason"] == "api_hangup"
    finally:
        await caller.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_ends_the_call_as_an_upstream_error_when_the_session_fails(engine, api):
    caller, call = await _dial(api, QueuedAudioTrack())
    try:
        dropped = await sync_to_async(engine.engine)("POST", f"calls/{call.upstream_id}/drop_sideband?fatal=1")
        assert dropped.json() == {"dropped": 1}
        await wait_until(lambda: Call.objects.filter(pk=call.pk, status=Call.Status.ENDED).exists())
    finally:
        await caller.close()

    await sync_to_async(call.refresh_from_db)()
    assert call.end_reason == Call.EndReason.UPSTREAM_ERROR
    # It should keep OpenAI's error: as an event, and on the call's end.
    error = await sync_to_async(CallEvent.objects.get)(call=call, event_type="error")
    assert error.data["error"]["code"] == "server_error"
    ended = await sync_to_async(CallEvent.objects.get)(call=call, event_type="call.ended")
    assert ended.data["reason"] == "upstream_error"
    assert ended.data["close_code"] == 4000
    assert ended.data["error"]["code"] == "server_error"
    assert await sync_to_async(_count)(call, "call.ended") == 1
    # It should also hang the call up upstream (right after ending it), so nothing keeps running there.
    await wait_until(lambda: Call.objects.filter(pk=call.pk, upstream_closed_at__isnull=False).exists())
    hangup = await sync_to_async(CallEvent.objects.get)(call=call, event_type="upstream.hangup")
    assert hangup.data["already_gone"] is False
