"""Calls held by the embedded engine: one aiortc peer each, echoing the caller's audio.

The engine lives on the server's event loop; the views in `views.py` are its HTTP surface.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from django.conf import settings

from . import protocol

logger = logging.getLogger(__name__)


@dataclass
class Fault:
    """A scripted misbehaviour for the next `count` requests to `op` ("create" or "hangup")."""

    op: str
    status: int | None = None
    delay_ms: int = 0
    # "malformed": answer 201 with something that is not an SDP answer and no Location.
    body: str | None = None
    retry_after: str | None = None
    count: int = 1


@dataclass
class LocalCall:
    id: str
    session: dict[str, Any]
    pc: RTCPeerConnection
    created_at: float = field(default_factory=time.time)
    channel: RTCDataChannel | None = None
    hangup_requests: int = 0
    closed_reason: str | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "connection_state": self.pc.connectionState,
            "data_channel": self.channel.readyState if self.channel else None,
            "hangup_requests": self.hangup_requests,
            "closed_reason": self.closed_reason,
            "session": self.session,
        }


class Engine:
    # Ended calls are kept (bounded) so hangups of recently ended calls can still be counted.
    KEEP_ENDED = 1000

    def __init__(self) -> None:
        self.calls: dict[str, LocalCall] = {}
        self.ended: OrderedDict[str, LocalCall] = OrderedDict()
        self.faults: list[Fault] = []

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

    def find(self, call_id: str) -> LocalCall | None:
        return self.calls.get(call_id) or self.ended.get(call_id)

    async def create(self, *, offer: str, session: dict[str, Any]) -> tuple[LocalCall, str]:
        call_id = protocol.new_id("rtc_u1", length=32)
        effective = protocol.effective_session(
            session, session_id=protocol.new_id("sess"), expires_at=protocol.expires_at(settings.LOCALREALTIME_MAX_SESSION_SECONDS)
        )
        # No ICE servers: nothing outside this machine is contacted, and gathering is immediate.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        call = LocalCall(id=call_id, session=effective, pc=pc)
        relay = MediaRelay()

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                pc.addTrack(relay.subscribe(track))

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

    async def hangup(self, call_id: str) -> bool:
        call = self.find(call_id)
        if call is None:
            return False
        call.hangup_requests += 1
        if call.id not in self.calls:
            return False
        await self.close(call, reason="hangup")
        return True

    async def close(self, call: LocalCall, *, reason: str) -> None:
        if self.calls.pop(call.id, None) is None:
            return
        call.closed_reason = reason
        self.ended[call.id] = call
        while len(self.ended) > self.KEEP_ENDED:
            self.ended.popitem(last=False)
        current = asyncio.current_task()
        for task in call.tasks:
            if task is not current:
                task.cancel()
        await call.pc.close()
        logger.info("Local call %s closed (%s)", call.id, reason)

    async def _expire(self, call: LocalCall) -> None:
        """Drop calls whose caller never connected, and end every call at the session cap."""
        await asyncio.sleep(settings.LOCALREALTIME_CONNECT_TIMEOUT)
        if call.pc.connectionState != "connected":
            await self.close(call, reason="connect_timeout")
            return
        await asyncio.sleep(max(settings.LOCALREALTIME_MAX_SESSION_SECONDS - settings.LOCALREALTIME_CONNECT_TIMEOUT, 0))
        await self.close(call, reason="max_duration")

    # --- the oai-events data channel ----------------------------------------------------------

    def _attach_channel(self, call: LocalCall, channel: RTCDataChannel) -> None:
        call.channel = channel

        @channel.on("message")
        def on_message(message: Any) -> None:
            for event in self.handle_client_event(call, message):
                self.send(call, event)

        self.send(call, protocol.server_event("session.created", session=call.session))

    def send(self, call: LocalCall, event: dict[str, Any]) -> None:
        if call.channel is not None and call.channel.readyState == "open":
            call.channel.send(json.dumps(event))

    def handle_client_event(self, call: LocalCall, message: Any) -> list[dict[str, Any]]:
        """Answer one client event; unknown or malformed events get a non-fatal `error`."""
        try:
            event = json.loads(message)
        except (TypeError, ValueError):
            return [protocol.error_event("The event could not be parsed as JSON.", code="invalid_json")]
        if not isinstance(event, dict) or "type" not in event:
            return [protocol.error_event("The 'type' field is missing.", code="invalid_event")]
        client_event_id = event.get("event_id")
        if event["type"] == "session.update":
            update = event.get("session")
            try:
                protocol.check_session(update)
            except protocol.ApiError as exc:
                return [protocol.error_event(exc.message, code=exc.code or "invalid_value", param=exc.param, event_id=client_event_id)]
            call.session = protocol.merge(call.session, {k: v for k, v in update.items() if k != "type"})
            return [protocol.server_event("session.updated", session=call.session)]
        return [
            protocol.error_event(
                f"Invalid value: '{str(event['type'])[:100]}'. Unsupported client event type.",
                code="invalid_value",
                param="type",
                event_id=client_event_id,
            )
        ]


engine = Engine()
