"""The sideband WebSocket, `GET /v1/realtime?call_id=...`, as OpenAI serves it for WebRTC/SIP calls.

A server joins a running call with its API key and receives every server event of the call (the
same stream the caller's data channel gets) and may send client events. The handshake is refused
with 401 for a bad key and 404 for an unknown or ended call; the socket closes when the call ends.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any, NoReturn
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import protocol
from .engine import LocalCall, Sideband, engine


class SidebandConsumer(AsyncWebsocketConsumer):
    call: LocalCall | None = None
    sideband: Sideband | None = None
    sender: asyncio.Task[None] | None = None

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self.scope.get("headers", [])}
        auth = headers.get("authorization", "")
        key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not hmac.compare_digest(key.encode(), settings.LOCALREALTIME_API_KEY.encode()):
            await self._deny(401)
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        call = engine.calls.get((query.get("call_id") or [""])[0])
        if call is None:
            await self._deny(404)
        if "openai-beta" in headers:
            # The beta interface is gone: OpenAI answers its header with an error and close 4000.
            await self.accept()
            event = protocol.error_event("The beta API shape is disabled; remove the OpenAI-Beta header.", code="beta_api_shape_disabled")
            await self.send(text_data=json.dumps(event))
            await self.close(code=4000)
            raise StopConsumer
        await self.accept()
        self.call = call
        self.sideband = engine.attach_sideband(call)
        self.sender = asyncio.ensure_future(self._forward())

    async def _deny(self, status: int) -> NoReturn:
        await self.base_send({"type": "websocket.http.response.start", "status": status, "headers": []})
        await self.base_send({"type": "websocket.http.response.body", "body": b""})
        raise StopConsumer

    async def _forward(self) -> None:
        """Send the call's events in order; close when the call ends."""
        assert self.sideband is not None
        while (event := await self.sideband.queue.get()) is not None:
            if event is Sideband.DROP:
                await self.close(code=3008)
                return
            if event is Sideband.FAIL:
                error = protocol.error_event("The server had an error while processing your session.", code="server_error")
                error["error"]["type"] = "server_error"
                await self.send(text_data=json.dumps(error))
                await self.close(code=4000)
                return
            await self.send(text_data=json.dumps(event))
        await self.close(code=1000)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.call is not None:
            engine.receive(self.call, text_data if text_data is not None else bytes_data)

    async def disconnect(self, code: int) -> None:
        if self.call is not None and self.sideband is not None:
            engine.detach_sideband(self.call, self.sideband)
        if self.sender is not None and self.sender is not asyncio.current_task():
            self.sender.cancel()
