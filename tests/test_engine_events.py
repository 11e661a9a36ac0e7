"""The embedded engine's event protocol: data channel and sideband WebSocket, GA names and types only.

Every server event received here is validated against the SDK's own `RealtimeServerEvent` union,
so the engine cannot drift from OpenAI's published types.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import openai
import pytest
import websockets
from django.conf import settings
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from localrealtime.caller import Caller, QueuedAudioTrack
from tests.conftest import start_server, stop_server

# The server needs the test database to exist, though these tests use only the engine.
pytestmark = pytest.mark.django_db(transaction=True)

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "Repeat after me.",
    "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}, "output": {"voice": "marin"}},
}
USER_TURN = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
]
AUDIO_RESPONSE_HEAD = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "output_audio_buffer.started",
]
AUDIO_RESPONSE_TAIL = [
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "conversation.item.done",
    "response.output_item.done",
    "response.done",
    "output_audio_buffer.stopped",
    "rate_limits.updated",
]


def _client(server: Any, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key or settings.LOCALREALTIME_API_KEY, base_url=server.engine_url, max_retries=0)


def _types(events: list[dict[str, Any]]) -> list[str]:
    # Deltas vary in number with the text; the protocol's shape is the rest.
    return [e["type"] for e in events if not e["type"].endswith(".delta")]


async def _start_call(server: Any, track: QueuedAudioTrack) -> tuple[openai.AsyncOpenAI, Caller, str]:
    client = _client(server)
    caller = Caller(audio=track)
    result = await client.realtime.calls.create(sdp=await caller.offer(), session=SESSION)  # type: ignore[arg-type]
    await caller.accept(result.text)
    await caller.wait_for(lambda: caller.events, within=20)
    return client, caller, result.response.headers["location"].rsplit("/", 1)[-1]


async def _read_until(connection: Any, received: list[dict[str, Any]], last_type: str, within: float = 15) -> None:
    async with asyncio.timeout(within):
        while True:
            event = json.loads(await connection.recv_bytes())
            received.append(event)
            if event["type"] == last_type:
                return


@pytest.mark.asyncio
async def test_it_sends_the_same_ga_events_on_the_data_channel_and_the_sideband(asgi_server):
    track = QueuedAudioTrack()
    client, caller, call_id = await _start_call(asgi_server, track)
    sideband: list[dict[str, Any]] = []
    try:
        async with client.realtime.connect(call_id=call_id) as connection:
            await _read_until(connection, sideband, "session.created")
            caller.events.clear()
            track.tone(1.0)
            await _read_until(connection, sideband, "rate_limits.updated")
            await caller.wait_for(lambda: caller.events and caller.events[-1]["type"] == "rate_limits.updated")

            # It should speak the GA protocol, in OpenAI's order, identically on both transports.
            assert _types(sideband) == [
                "session.created",
                *USER_TURN[:5],
                "conversation.item.input_audio_transcription.completed",
                *AUDIO_RESPONSE_HEAD,
                *AUDIO_RESPONSE_TAIL,
            ]
            assert caller.events == sideband[1:]
            for event in sideband:
                assert SERVER_EVENT.validate_python(event).type == event["type"]

            by_type = {e["type"]: e for e in sideband}
            started, stopped = by_type["input_audio_buffer.speech_started"], by_type["input_audio_buffer.speech_stopped"]
            speech_ms = stopped["audio_end_ms"] - started["audio_start_ms"]
            # 1 s of tone, plus the 300 ms prefix padding and the 500 ms of silence that end a turn (codec edges blur it).
            assert 1400 <= speech_ms <= 2100
            assert started["item_id"] == stopped["item_id"] == by_type["input_audio_buffer.committed"]["item_id"]
            completed = by_type["conversation.item.input_audio_transcription.completed"]
            assert completed["transcript"] == f"[{speech_ms / 1000:.2f} s of speech]"
            user_tokens = math.ceil(speech_ms / 100)
            assert completed["usage"]["input_tokens"] == user_tokens

            response = by_type["response.done"]["response"]
            echoed = f"[echo] {completed['transcript']}"
            assert response["status"] == "completed"
            assert response["output"][0]["content"] == [{"type": "output_audio", "transcript": echoed}]
            assert response["usage"] == {
                "total_tokens": 4 + user_tokens + math.ceil(len(echoed) / 4) + math.ceil(speech_ms / 50),
                "input_tokens": 4 + user_tokens,
                "output_tokens": math.ceil(len(echoed) / 4) + math.ceil(speech_ms / 50),
                "input_token_details": {
                    "text_tokens": 4,  # "Repeat after me." is 16 characters
                    "audio_tokens": user_tokens,
                    "image_tokens": 0,
                    "cached_tokens": 0,
                    "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
                },
                "output_token_details": {"text_tokens": math.ceil(len(echoed) / 4), "audio_tokens": math.ceil(speech_ms / 50)},
            }
            limits = by_type["rate_limits.updated"]["rate_limits"]
            assert limits[1] == {
                "name": "tokens",
                "limit": 400_000,
                "remaining": 400_000 - response["usage"]["total_tokens"],
                "reset_seconds": 60.0,
            }
            # It should keep echoing the caller's audio over RTP.
            assert caller.loud_frames_received > 0
    finally:
        await caller.close()


@pytest.mark.asyncio
async def test_it_speaks_its_answer_after_a_pause_and_stops_when_the_caller_speaks_over_it(asgi_server):
    track = QueuedAudioTrack()
    client, caller, call_id = await _start_call(asgi_server, track)
    sideband: list[dict[str, Any]] = []
    try:
        async with client.realtime.connect(call_id=call_id) as connection:
            await _read_until(connection, sideband, "session.created")
            heard = caller.loud_frames_received
            track.tone(1.5)
            await _read_until(connection, sideband, "output_audio_buffer.started")
            # Nothing is heard before the answer starts: the engine no longer echoes as it listens.
            assert caller.loud_frames_received == heard
            await caller.wait_for(lambda: caller.loud_frames_received > heard + 5, within=5)
            # The caller speaks over the answer (1.5 s long) a moment into it.
            track.tone(0.5)
            await _read_until(connection, sideband, "output_audio_buffer.stopped", within=20)

            for event in sideband:
                assert SERVER_EVENT.validate_python(event).type == event["type"]
            types = _types(sideband)
            cut = types.index("output_audio_buffer.cleared")
            assert types[cut - 1 : cut + 4] == [
                "input_audio_buffer.speech_started",
                "output_audio_buffer.cleared",
                "conversation.item.truncated",
                "rate_limits.updated",
                "input_audio_buffer.speech_stopped",
            ]
            # The first answer's item, truncated where its audio stopped (a part of its 1.5 s).
            first = next(e for e in sideband if e["type"] == "response.done")["response"]
            truncated = next(e for e in sideband if e["type"] == "conversation.item.truncated")
            assert truncated["item_id"] == first["output"][0]["id"]
            assert 0 < truncated["audio_end_ms"] < 1500
            assert next(e for e in sideband if e["type"] == "output_audio_buffer.cleared")["response_id"] == first["id"]
            # The second turn is answered in full.
            assert types[-2:] == ["response.done", "output_audio_buffer.stopped"]
            assert types.count("output_audio_buffer.started") == 2
            assert types.count("output_audio_buffer.stopped") == 1
    finally:
        await caller.close()


@pytest.mark.asyncio
async def test_it_speaks_a_response_asked_for_with_response_create(asgi_server):
    client, caller, call_id = await _start_call(asgi_server, QueuedAudioTrack())
    received: list[dict[str, Any]] = []
    try:
        async with client.realtime.connect(call_id=call_id) as connection:
            await _read_until(connection, received, "session.created")
            await caller.wait_for(caller.connected.is_set, within=20)
            heard = caller.loud_frames_received
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Bonjour tout le monde"}]}
            await connection.send({"type": "conversation.item.create", "item": item})
            await connection.send({"type": "response.create"})
            await _read_until(connection, received, "rate_limits.updated")

            for event in received:
                SERVER_EVENT.validate_python(event)
            assert _types(received[1:]) == ["conversation.item.added", "conversation.item.done", *AUDIO_RESPONSE_HEAD, *AUDIO_RESPONSE_TAIL]
            # Spoken: 21 characters at 15 a second, about 1.4 s of audio the caller hears.
            await caller.wait_for(lambda: caller.loud_frames_received >= heard + 50, within=5)
    finally:
        await caller.close()


@pytest.mark.asyncio
async def test_it_echoes_text_input_and_answers_unknown_events_with_an_error(asgi_server):
    client, caller, call_id = await _start_call(asgi_server, QueuedAudioTrack())
    received: list[dict[str, Any]] = []
    try:
        async with client.realtime.connect(call_id=call_id) as connection:
            await _read_until(connection, received, "session.created")
            await connection.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
            await _read_until(connection, received, "session.updated")
            assert received[-1]["session"]["output_modalities"] == ["text"]

            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Bonjour"}]}
            await connection.send({"type": "conversation.item.create", "item": item})
            await connection.send({"type": "response.create"})
            await _read_until(connection, received, "rate_limits.updated")
            await connection.send({"type": "session.nonsense", "event_id": "evt_1"})  # type: ignore[typeddict-item]
            await _read_until(connection, received, "error")

            for event in received:
                SERVER_EVENT.validate_python(event)
            assert _types(received[2:]) == [
                "conversation.item.added",
                "conversation.item.done",
                "response.created",
                "response.output_item.added",
                "conversation.item.added",
                "response.content_part.added",
                "response.output_text.done",
                "response.content_part.done",
                "conversation.item.done",
                "response.output_item.done",
                "response.done",
                "rate_limits.updated",
                "error",
            ]
            done = next(e for e in received if e["type"] == "response.done")["response"]
            assert done["output"][0]["content"] == [{"type": "output_text", "text": "[echo] Bonjour"}]
            assert done["usage"]["output_token_details"] == {"text_tokens": 4, "audio_tokens": 0}
            assert received[-1]["error"] == {
                "type": "invalid_request_error",
                "code": "invalid_value",
                "message": "Invalid value: 'session.nonsense'. Unsupported client event type.",
                "param": "type",
                "event_id": "evt_1",
            }
            # It should close the sideband socket when the call is hung up.
            await client.realtime.calls.hangup(call_id)
            async with asyncio.timeout(10):
                with pytest.raises(websockets.ConnectionClosedOK):
                    while True:
                        await connection.recv_bytes()
    finally:
        await caller.close()


@pytest.mark.asyncio
async def test_it_refuses_unknown_calls_and_bad_keys_at_the_handshake(asgi_server):
    url = asgi_server.engine_url.replace("http://", "ws://") + "/realtime?call_id=rtc_u1_unknown"
    with pytest.raises(websockets.InvalidStatus) as unknown:
        await websockets.connect(url, additional_headers={"Authorization": f"Bearer {settings.LOCALREALTIME_API_KEY}"})
    assert unknown.value.response.status_code == 404
    with pytest.raises(websockets.InvalidStatus) as bad_key:
        await websockets.connect(url, additional_headers={"Authorization": "Bearer sk-wrong"})
    assert bad_key.value.response.status_code == 401


@pytest.mark.asyncio
async def test_it_answers_the_beta_header_with_an_error_and_close_4000(asgi_server):
    _client_unused, caller, call_id = await _start_call(asgi_server, QueuedAudioTrack())
    url = asgi_server.engine_url.replace("http://", "ws://") + f"/realtime?call_id={call_id}"
    headers = {"Authorization": f"Bearer {settings.LOCALREALTIME_API_KEY}", "OpenAI-Beta": "realtime=v1"}
    try:
        async with websockets.connect(url, additional_headers=headers) as socket:
            event = json.loads(await socket.recv())
            with pytest.raises(websockets.ConnectionClosedError):
                await socket.recv()
        assert SERVER_EVENT.validate_python(event).type == "error"
        assert event["error"]["code"] == "beta_api_shape_disabled"
        assert socket.close_code == 4000
    finally:
        await caller.close()


@pytest.mark.asyncio
async def test_it_closes_the_sideband_at_the_session_cap(tmp_path):
    # A server whose "60-minute" cap is 4 s (and which waits at most 3 s for the caller's media).
    server = await asyncio.to_thread(
        start_server, tmp_path, extra_env={"LOCALREALTIME_CONNECT_TIMEOUT": "3", "LOCALREALTIME_MAX_SESSION_SECONDS": "4"}
    )
    try:
        client, caller, call_id = await _start_call(server, QueuedAudioTrack())
        received: list[dict[str, Any]] = []
        try:
            async with client.realtime.connect(call_id=call_id) as connection:
                await _read_until(connection, received, "session.created")
                async with asyncio.timeout(15):
                    with pytest.raises(websockets.ConnectionClosedOK):
                        while True:
                            await connection.recv_bytes()
            described = (await asyncio.to_thread(server.engine, "GET", f"calls/{call_id}")).json()
            assert described["closed_reason"] == "max_duration"
            assert described["sideband_sockets"] == 0
        finally:
            await caller.close()
    finally:
        await asyncio.to_thread(stop_server, server)
