"""Calls held by the embedded engine: one aiortc peer each, echoing the caller's audio.

The engine lives on the server's event loop; the views in `views.py` are its HTTP surface and
`consumers.py` its sideband WebSocket. Every server event goes, in the same order, to the call's
`oai-events` data channel and to each sideband socket, as OpenAI does.

The conversation is an echo: voice activity is detected from the energy of the caller's real
audio (server VAD), each detected turn is committed as a user item, and the response repeats it:
over WebRTC, after a "thinking" delay (LOCALREALTIME_RESPONSE_DELAY_MS plus up to
LOCALREALTIME_RESPONSE_JITTER_MS), the engine's own audio track plays back what the caller said,
with `output_audio_buffer.started` as its first frame leaves and `.stopped` after its last, so
turn latency, talk time and barge-in are real. The caller speaking over it (with the session's
`interrupt_response`) cuts it: `output_audio_buffer.cleared` and `conversation.item.truncated`.
A phone call's RTP still echoes packet by packet (localrealtime.sip), its response events sent at
once. There is no speech recognition, so
transcripts are labels ("[1.24 s of speech]"). Usage is computed deterministically from audio
durations and text lengths with OpenAI's published rules of thumb, so costs can be asserted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame
from django.conf import settings

from . import dtls, protocol
from .media import SAMPLE_RATE, ClipPlayer, audio_frames

logger = logging.getLogger(__name__)

# RMS level (full scale = 1.0) that counts as speech at the session's default VAD threshold 0.5;
# the threshold scales it. About -34 dBFS: a voice at arm's length, well above line noise.
SPEECH_RMS_AT_DEFAULT_THRESHOLD = 0.02
# How many sideband event ids a call remembers, for the engine's inspection endpoint.
KEEP_SIDEBAND_IDS = 10_000
# The longest turn played back (60 s of 48 kHz samples); what is longer is cut.
MAX_ECHO_SAMPLES = 60 * SAMPLE_RATE


@dataclass
class Fault:
    """A scripted misbehaviour for the next `count` requests to `op` ("create", "hangup", "accept", "reject", "refer")."""

    op: str
    status: int | None = None
    delay_ms: int = 0
    # "malformed": answer 201 with something that is not an SDP answer and no Location.
    body: str | None = None
    retry_after: str | None = None
    count: int = 1
    # Drop the TCP connection (RST) instead of answering, as a crashed proxy or peer would.
    reset: bool = False


class Sideband:
    """One sideband WebSocket's outbox: events in order, then None when the call is over.

    `DROP` instead makes the socket fail as a server-side timeout would (close 3008, the IANA
    "timeout" code): the
    engine's control for testing reconnection.
    """

    DROP: dict[str, Any] = {"type": "_drop"}
    # A fatal session error, as OpenAI ends a session it cannot continue: `error`, then close 4000.
    FAIL: dict[str, Any] = {"type": "_fail"}

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()


@dataclass
class LocalCall:
    id: str
    session: dict[str, Any]
    # None for a phone call: its media is plain RTP (localrealtime.sip).
    pc: RTCPeerConnection | None
    created_at: float = field(default_factory=time.time)
    channel: RTCDataChannel | None = None
    hangup_requests: int = 0
    closed_reason: str | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    sidebands: list[Sideband] = field(default_factory=list)
    sideband_connections: int = 0
    # (event_id, type) of what was sent on sideband sockets, for the engine's inspection endpoint.
    sideband_events: list[tuple[str, str]] = field(default_factory=list)
    conversation_id: str = field(default_factory=lambda: protocol.new_id("conv"))
    last_item_id: str | None = None
    # The last user item, echoed by the next response.
    pending_user: dict[str, Any] | None = None
    # Tokens of the conversation so far: re-sent (and cached) on every later response.
    history_text_tokens: int = 0
    history_audio_tokens: int = 0
    responses: int = 0
    tokens_used: int = 0
    last_response_id: str | None = None
    audio_sent: bool = False
    # Run once when the call closes, with the reason (a phone call sends BYE and stops its RTP).
    on_close: Callable[[str], Awaitable[None]] | None = None
    # The engine's voice over WebRTC (None for a phone call, whose RTP echoes).
    player: ClipPlayer | None = None
    # A response waiting out its thinking delay (cancelled if the caller speaks again meanwhile).
    thinking: asyncio.Task[None] | None = None
    # The response whose audio is playing: (response_id, item_id, its closing rate_limits.updated).
    playing: tuple[str, str, dict[str, Any]] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "connection_state": self.pc.connectionState if self.pc else "sip",
            "data_channel": self.channel.readyState if self.channel else None,
            "hangup_requests": self.hangup_requests,
            "closed_reason": self.closed_reason,
            "session": self.session,
            "sideband_sockets": len(self.sidebands),
            "sideband_connections": self.sideband_connections,
            "sideband_events": self.sideband_events,
            "responses": self.responses,
        }


@dataclass
class EndedCall:
    """What the engine keeps of an ended call: its last description and the hangups it still
    receives. Not the call itself: with its closed peer (aiortc), each kept call held thousands of
    objects, 1,000 calls some 200 MB, all walked by every full collection of the garbage collector
    (docs/benchmarks.md, "Night")."""

    id: str
    description: dict[str, Any]
    hangup_requests: int = 0

    def describe(self) -> dict[str, Any]:
        return {**self.description, "hangup_requests": self.hangup_requests}


class Engine:
    def __init__(self) -> None:
        self.calls: dict[str, LocalCall] = {}
        self.ended: OrderedDict[str, LocalCall | EndedCall] = OrderedDict()
        self.faults: list[Fault] = []
        # Authenticated requests received per operation ("create", "hangup"), faulted or not:
        # how tests and the soak check what reached "OpenAI".
        self.requests: dict[str, int] = {"create": 0, "hangup": 0, "accept": 0, "reject": 0, "refer": 0, "sip_invite": 0}
        # The SIP user agent (localrealtime.sip), while it runs.
        self.sip: Any = None

    # --- faults -----------------------------------------------------------------------------

    def take_fault(self, op: str) -> Fault | None:
        for fault in self.faults:
            if fault.op == op:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    # --- calls ------------------------------------------------------------------------------

    def find(self, call_id: str) -> LocalCall | EndedCall | None:
        return self.calls.get(call_id) or self.ended.get(call_id)

    async def create(self, *, offer: str, session: dict[str, Any]) -> tuple[LocalCall, str]:
        call_id = protocol.new_id("rtc_u1", length=32)
        effective = protocol.effective_session(
            session, session_id=protocol.new_id("sess"), expires_at=protocol.expires_at(settings.LOCALREALTIME_MAX_SESSION_SECONDS)
        )
        # No ICE servers: nothing outside this machine is contacted, and gathering is immediate.
        # One certificate for all the engine's peers (localrealtime.dtls).
        pc = dtls.peer_connection(RTCConfiguration(iceServers=[]))
        call = LocalCall(id=call_id, session=effective, pc=pc, player=ClipPlayer())

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio" and call.player is not None:
                pc.addTrack(call.player)
                call.tasks.append(asyncio.ensure_future(self._listen(call, track)))

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label == "oai-events":
                self._attach_channel(call, channel)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and call.id in self.calls:
                await self.close(call, reason="caller_left")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await pc.close()
            raise protocol.ApiError(400, "Invalid SDP offer. Please try again with a WHIP-compliant offer.", code="invalid_offer") from exc
        self.calls[call_id] = call
        call.tasks.append(asyncio.ensure_future(self._expire(call)))
        return call, pc.localDescription.sdp

    def adopt(self, call: LocalCall, *, audio: MediaStreamTrack) -> None:
        """Run a call whose media lives elsewhere (a phone call's RTP): same VAD, events and cap."""
        self.calls[call.id] = call
        call.tasks.append(asyncio.ensure_future(self._listen(call, audio)))
        call.tasks.append(asyncio.ensure_future(self._cap(call)))

    async def _cap(self, call: LocalCall) -> None:
        await asyncio.sleep(settings.LOCALREALTIME_MAX_SESSION_SECONDS)
        await self.close(call, reason="max_duration")

    async def hangup(self, call_id: str) -> bool:
        call = self.find(call_id)
        if call is None:
            return False
        call.hangup_requests += 1
        live = self.calls.get(call.id)
        if live is None:
            return False
        await self.close(live, reason="hangup")
        return True

    async def close(self, call: LocalCall, *, reason: str) -> None:
        if self.calls.pop(call.id, None) is None:
            return
        call.closed_reason = reason
        self.ended[call.id] = call
        # Ended calls are kept (bounded) so hangups of recently ended calls can still be counted.
        while len(self.ended) > settings.LOCALREALTIME_KEEP_ENDED:
            self.ended.popitem(last=False)
        current = asyncio.current_task()
        for task in call.tasks:
            if task is not current:
                task.cancel()
        # The sideband sockets live as long as the call (OpenAI: "for the life of the call").
        for sideband in call.sidebands:
            sideband.queue.put_nowait(None)
        if call.on_close is not None:
            await call.on_close(reason)
        if call.pc is not None:
            await call.pc.close()
        if call.id in self.ended:
            # Kept by the hangups received while it closed, and from now on.
            self.ended[call.id] = EndedCall(call.id, call.describe(), call.hangup_requests)
        logger.info("Local call %s closed (%s)", call.id, reason)

    async def _expire(self, call: LocalCall) -> None:
        """Drop calls whose caller never connected, and end every call at the session cap."""
        await asyncio.sleep(settings.LOCALREALTIME_CONNECT_TIMEOUT)
        if call.pc is not None and call.pc.connectionState != "connected":
            await self.close(call, reason="connect_timeout")
            return
        await asyncio.sleep(max(settings.LOCALREALTIME_MAX_SESSION_SECONDS - settings.LOCALREALTIME_CONNECT_TIMEOUT, 0))
        await self.close(call, reason="max_duration")

    # --- event transport: the data channel and the sideband sockets ---------------------------

    def _attach_channel(self, call: LocalCall, channel: RTCDataChannel) -> None:
        call.channel = channel

        @channel.on("message")
        def on_message(message: Any) -> None:
            self.receive(call, message)

        self._send_channel(call, protocol.server_event("session.created", session=call.session))

    def attach_sideband(self, call: LocalCall) -> Sideband:
        """A sideband socket joined the call: it gets its own `session.created`, then every event."""
        sideband = Sideband()
        call.sidebands.append(sideband)
        call.sideband_connections += 1
        self._send_sideband(call, sideband, protocol.server_event("session.created", session=call.session))
        return sideband

    def drop_sidebands(self, call: LocalCall, *, fatal: bool = False) -> int:
        for sideband in call.sidebands:
            sideband.queue.put_nowait(Sideband.FAIL if fatal else Sideband.DROP)
        return len(call.sidebands)

    def detach_sideband(self, call: LocalCall, sideband: Sideband) -> None:
        if sideband in call.sidebands:
            call.sidebands.remove(sideband)

    def _send_channel(self, call: LocalCall, event: dict[str, Any]) -> None:
        if call.channel is not None and call.channel.readyState == "open":
            call.channel.send(json.dumps(event))

    def _send_sideband(self, call: LocalCall, sideband: Sideband, event: dict[str, Any]) -> None:
        sideband.queue.put_nowait(event)
        call.sideband_events.append((event["event_id"], event["type"]))
        del call.sideband_events[:-KEEP_SIDEBAND_IDS]

    def emit(self, call: LocalCall, event: dict[str, Any]) -> None:
        """Send one server event to every listener of the call, in the same order for all."""
        self._send_channel(call, event)
        for sideband in call.sidebands:
            self._send_sideband(call, sideband, event)

    def receive(self, call: LocalCall, message: Any) -> None:
        """A client event from the data channel or a sideband socket; answers go to every listener."""
        if call.id not in self.calls:
            return
        for event in self.handle_client_event(call, message):
            self.emit(call, event)

    # --- client events ------------------------------------------------------------------------

    def handle_client_event(self, call: LocalCall, message: Any) -> list[dict[str, Any]]:
        """Answer one client event; unknown or malformed events get a non-fatal `error`."""
        try:
            event = json.loads(message)
        except (TypeError, ValueError):
            return [protocol.error_event("The event could not be parsed as JSON.", code="invalid_json")]
        if not isinstance(event, dict) or "type" not in event:
            return [protocol.error_event("The 'type' field is missing.", code="invalid_event")]
        client_event_id = event.get("event_id")
        kind = event["type"]
        if kind == "session.update":
            return self._session_update(call, event.get("session"), client_event_id)
        if kind == "conversation.item.create":
            return self._item_create(call, event.get("item"), client_event_id)
        if kind == "response.create":
            if self._speaks(call):
                # Spoken at 15 characters a second, as `_respond` bills it: a voice-like tone that long.
                text = (call.pending_user or {}).get("text", "")
                self._think(call, _tone(max(len(text) / 15, 0.5)))
                return []
            return self._respond(call)
        if kind == "response.cancel":
            # Responses here complete as soon as they start: there is never one to cancel.
            return [
                protocol.error_event(
                    "Cancellation failed: no active response found.", code="response_cancel_not_active", event_id=client_event_id
                )
            ]
        if kind == "output_audio_buffer.clear" and call.playing is not None:
            return self._cut(call, truncate=False)
        if kind == "output_audio_buffer.clear" and call.last_response_id:
            return [protocol.server_event("output_audio_buffer.cleared", response_id=call.last_response_id)]
        return [
            protocol.error_event(
                f"Invalid value: '{str(kind)[:100]}'. Unsupported client event type.",
                code="invalid_value",
                param="type",
                event_id=client_event_id,
            )
        ]

    def _session_update(self, call: LocalCall, update: Any, client_event_id: str | None) -> list[dict[str, Any]]:
        try:
            protocol.check_session(update)
        except protocol.ApiError as exc:
            return [protocol.error_event(exc.message, code=exc.code or "invalid_value", param=exc.param, event_id=client_event_id)]
        voice = ((update.get("audio") or {}).get("output") or {}).get("voice")
        if call.audio_sent and voice and voice != call.session["audio"]["output"]["voice"]:
            return [
                protocol.error_event(
                    "Cannot update a conversation's voice if assistant audio is present.",
                    code="cannot_update_voice",
                    param="session.audio.output.voice",
                    event_id=client_event_id,
                )
            ]
        call.session = protocol.merge(call.session, {k: v for k, v in update.items() if k != "type"})
        return [protocol.server_event("session.updated", session=call.session)]

    def _item_create(self, call: LocalCall, item: Any, client_event_id: str | None) -> list[dict[str, Any]]:
        content = item.get("content") if isinstance(item, dict) else None
        texts = [c.get("text") for c in content or () if isinstance(c, dict) and c.get("type") == "input_text"]
        if not isinstance(item, dict) or item.get("type") != "message" or item.get("role") != "user" or not texts:
            return [
                protocol.error_event(
                    "This engine accepts user messages with input_text content.",
                    code="invalid_value",
                    param="item",
                    event_id=client_event_id,
                )
            ]
        text = " ".join(str(t) for t in texts)
        item_id = str(item.get("id") or protocol.new_id("item"))
        previous, call.last_item_id = call.last_item_id, item_id
        done = protocol.user_item(item_id, text=text)
        call.pending_user = {"text": text, "text_tokens": protocol.tokens_for_text(text), "audio_tokens": 0, "audio_ms": 0.0}
        return [
            protocol.server_event("conversation.item.added", previous_item_id=previous, item=done),
            protocol.server_event("conversation.item.done", previous_item_id=previous, item=done),
        ]

    # --- voice activity and user turns ----------------------------------------------------------

    async def _listen(self, call: LocalCall, track: MediaStreamTrack) -> None:
        """Server VAD on the caller's decoded audio: RMS energy per frame against the threshold."""
        position_ms = 0.0
        speech_start_ms: float | None = None
        silence_ms = 0.0
        item_id = ""
        # What the caller said this turn (48 kHz mono), up to its last loud frame: the echo.
        voice: list[np.ndarray] = []
        voice_samples = loud_until = 0
        async for frame in audio_frames(track):
            frame_ms = 1000 * frame.samples / frame.sample_rate
            position_ms += frame_ms
            detection = call.session["audio"]["input"].get("turn_detection")
            if not detection:
                continue  # turn detection off: turns are the client's business (manual mode)
            pcm = frame.to_ndarray().astype(np.float32) / 32768.0
            loud = float(np.sqrt(np.mean(pcm * pcm))) >= SPEECH_RMS_AT_DEFAULT_THRESHOLD * detection.get("threshold", 0.5) / 0.5
            if speech_start_ms is None:
                if loud:
                    # OpenAI's audio_start_ms includes the configured prefix padding.
                    speech_start_ms = float(int(max(position_ms - frame_ms - detection.get("prefix_padding_ms", 300), 0.0)))
                    silence_ms = 0.0
                    item_id = protocol.new_id("item")
                    voice, voice_samples, loud_until = [], 0, 0
                    self.emit(
                        call,
                        protocol.server_event("input_audio_buffer.speech_started", audio_start_ms=int(speech_start_ms), item_id=item_id),
                    )
                    self._barge_in(call, detection)
            if speech_start_ms is None:
                continue
            if call.player is not None and voice_samples < MAX_ECHO_SAMPLES:
                voice.append(_mono_48k(frame))
                voice_samples += voice[-1].size
            if loud:
                loud_until = len(voice)
            silence_ms = 0.0 if loud else silence_ms + frame_ms
            if silence_ms >= detection.get("silence_duration_ms", 500):
                # ... and audio_end_ms the silence that ended the turn.
                echo = np.concatenate(voice[:loud_until]) if loud_until else None
                self._user_turn(call, item_id=item_id, start_ms=speech_start_ms, end_ms=position_ms, echo=echo)
                speech_start_ms = None

    def _user_turn(self, call: LocalCall, *, item_id: str, start_ms: float, end_ms: float, echo: np.ndarray | None = None) -> None:
        # Whole milliseconds, as the events carry them, so usage can be recomputed from the events.
        start_ms, end_ms = int(start_ms), int(end_ms)
        duration_ms = end_ms - start_ms
        previous, call.last_item_id = call.last_item_id, item_id
        self.emit(call, protocol.server_event("input_audio_buffer.speech_stopped", audio_end_ms=int(end_ms), item_id=item_id))
        self.emit(call, protocol.server_event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id))
        self.emit(
            call,
            protocol.server_event(
                "conversation.item.added", previous_item_id=previous, item=protocol.user_item(item_id, status="in_progress")
            ),
        )
        self.emit(call, protocol.server_event("conversation.item.done", previous_item_id=previous, item=protocol.user_item(item_id)))
        audio_tokens = protocol.tokens_for_user_audio(duration_ms)
        label = f"[{duration_ms / 1000:.2f} s of speech]"
        transcription = call.session["audio"]["input"].get("transcription")
        if transcription:
            text_tokens = protocol.tokens_for_text(label)
            self.emit(
                call,
                protocol.server_event(
                    "conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0, delta=label, obfuscation=""
                ),
            )
            transcription_usage = {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "output_tokens": text_tokens,
                "total_tokens": audio_tokens + text_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            }
            self.emit(
                call,
                protocol.server_event(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=item_id,
                    content_index=0,
                    transcript=label,
                    usage=transcription_usage,
                ),
            )
        call.pending_user = {"text": label, "text_tokens": 0, "audio_tokens": audio_tokens, "audio_ms": duration_ms}
        if (call.session["audio"]["input"].get("turn_detection") or {}).get("create_response", True):
            if self._speaks(call) and echo is not None:
                self._think(call, echo)
                return
            for event in self._respond(call):
                self.emit(call, event)

    # --- the engine's voice (WebRTC) -------------------------------------------------------------

    @staticmethod
    def _speaks(call: LocalCall) -> bool:
        return call.player is not None and call.session["output_modalities"] == ["audio"]

    def _think(self, call: LocalCall, samples: np.ndarray) -> None:
        """Answer after the thinking delay, one response at a time (a newer one replaces it)."""
        if call.thinking is not None:
            call.thinking.cancel()
        call.thinking = asyncio.ensure_future(self._speak(call, samples))
        call.tasks.append(call.thinking)

    async def _speak(self, call: LocalCall, samples: np.ndarray) -> None:
        jitter = settings.LOCALREALTIME_RESPONSE_JITTER_MS
        await asyncio.sleep((settings.LOCALREALTIME_RESPONSE_DELAY_MS + random.uniform(0, jitter)) / 1000)
        call.thinking = None
        assert call.player is not None
        if call.playing is not None:
            self.emit_all(call, self._cut(call, truncate=True))
        # The same events as an instant response; the audio's own ones timed by the player.
        events = self._respond(call)
        at = next(i for i, e in enumerate(events) if e["type"] == "output_audio_buffer.started")
        head, started, body, stopped, limits = events[:at], events[at], events[at + 1 : -2], events[-2], events[-1]
        self.emit_all(call, head)
        call.playing = (started["response_id"], head[1]["item"]["id"], limits)

        def on_start() -> None:
            self.emit_all(call, [started, *body])

        def on_end() -> None:
            call.playing = None
            self.emit_all(call, [stopped, limits])

        call.player.play(samples, on_start=on_start, on_end=on_end)

    def _barge_in(self, call: LocalCall, detection: dict[str, Any]) -> None:
        """The caller speaks: a response still thinking is dropped, one playing is cut (interrupt_response)."""
        if call.thinking is not None:
            call.thinking.cancel()
            call.thinking = None
        if call.playing is not None and call.player is not None and call.player.started and detection.get("interrupt_response", True):
            self.emit_all(call, self._cut(call, truncate=True))

    def _cut(self, call: LocalCall, *, truncate: bool) -> list[dict[str, Any]]:
        """Stop the audio playing: cleared, and (on barge-in) the item truncated where the caller heard it end."""
        assert call.playing is not None and call.player is not None
        response_id, item_id, limits = call.playing
        call.playing = None
        played_ms = call.player.cut()
        events = [protocol.server_event("output_audio_buffer.cleared", response_id=response_id)]
        if truncate:
            events.append(protocol.server_event("conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=played_ms))
        return [*events, limits]

    def emit_all(self, call: LocalCall, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.emit(call, event)

    # --- responses ------------------------------------------------------------------------------

    def _respond(self, call: LocalCall) -> list[dict[str, Any]]:
        """One response cycle echoing the last user turn, in OpenAI's order (GA names only)."""
        turn = call.pending_user or {"text": "", "text_tokens": 0, "audio_tokens": 0, "audio_ms": 0.0}
        call.pending_user = None
        audio = call.session["output_modalities"] == ["audio"]
        text = f"[echo] {turn['text']}".strip()
        # The echo lasts as long as what it repeats; a text turn is "spoken" at 15 characters a second.
        audio_ms = turn["audio_ms"] or 1000 * len(turn["text"]) / 15
        response_id, item_id = protocol.new_id("resp"), protocol.new_id("item")
        previous, call.last_item_id = call.last_item_id, item_id
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0}
        created = protocol.response(
            response_id, session=call.session, conversation_id=call.conversation_id, status="in_progress", output=[], usage=None
        )
        in_progress = protocol.assistant_item(item_id, audio=audio, text=None, status="in_progress")
        done_item = protocol.assistant_item(item_id, audio=audio, text=text, status="completed")
        part_added = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        events = [
            protocol.server_event("response.created", response=created),
            protocol.server_event("response.output_item.added", response_id=response_id, output_index=0, item=in_progress),
            protocol.server_event("conversation.item.added", previous_item_id=previous, item=in_progress),
            protocol.server_event("response.content_part.added", **where, content_index=0, part=part_added),
        ]
        if audio:
            events.append(protocol.server_event("output_audio_buffer.started", response_id=response_id))
        kind = "response.output_audio_transcript" if audio else "response.output_text"
        for chunk in _chunks(text, 12):
            events.append(protocol.server_event(f"{kind}.delta", **where, content_index=0, delta=chunk))
        events.append(
            protocol.server_event(f"{kind}.done", **where, content_index=0, **({"transcript": text} if audio else {"text": text}))
        )
        part_done = {"type": "audio", "transcript": text} if audio else {"type": "text", "text": text}
        events += [
            protocol.server_event("response.content_part.done", **where, content_index=0, part=part_done),
            protocol.server_event("conversation.item.done", previous_item_id=previous, item=done_item),
            protocol.server_event("response.output_item.done", response_id=response_id, output_index=0, item=done_item),
        ]
        # The whole conversation is re-sent on every response; what earlier responses saw is cached.
        instructions = protocol.tokens_for_text(call.session.get("instructions") or "")
        text_out = protocol.tokens_for_text(text)
        audio_out = protocol.tokens_for_assistant_audio(audio_ms) if audio else 0
        usage = protocol.usage(
            text_in=instructions + call.history_text_tokens + turn["text_tokens"],
            audio_in=call.history_audio_tokens + turn["audio_tokens"],
            text_cached=(instructions + call.history_text_tokens) if call.responses else 0,
            audio_cached=call.history_audio_tokens if call.responses else 0,
            text_out=text_out,
            audio_out=audio_out,
        )
        call.history_text_tokens += turn["text_tokens"] + text_out
        call.history_audio_tokens += turn["audio_tokens"] + audio_out
        call.responses += 1
        call.tokens_used += usage["total_tokens"]
        call.last_response_id = response_id
        call.audio_sent = call.audio_sent or audio
        done = protocol.response(
            response_id, session=call.session, conversation_id=call.conversation_id, status="completed", output=[done_item], usage=usage
        )
        events.append(protocol.server_event("response.done", response=done))
        if audio:
            events.append(protocol.server_event("output_audio_buffer.stopped", response_id=response_id))
        limits = settings.LOCALREALTIME_RATE_LIMITS
        events.append(
            protocol.server_event(
                "rate_limits.updated",
                rate_limits=[
                    {
                        "name": "requests",
                        "limit": limits["requests"],
                        "remaining": max(limits["requests"] - call.responses, 0),
                        "reset_seconds": 60.0,
                    },
                    {
                        "name": "tokens",
                        "limit": limits["tokens"],
                        "remaining": max(limits["tokens"] - call.tokens_used, 0),
                        "reset_seconds": 60.0,
                    },
                ],
            )
        )
        return events


def _mono_48k(frame: AudioFrame) -> np.ndarray:
    """A received frame as 48 kHz mono float samples (the first channel; 8 kHz G.711 upsampled)."""
    samples = frame.to_ndarray()
    mono = samples[0] if frame.format.is_planar else samples.reshape(-1, len(frame.layout.channels))[:, 0]
    mono = mono.astype(np.float32) / 32768.0
    return np.repeat(mono, SAMPLE_RATE // frame.sample_rate) if SAMPLE_RATE % frame.sample_rate == 0 else mono


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


engine = Engine()
