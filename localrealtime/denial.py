"""WebSocket handshakes refused with an HTTP status, as OpenAI refuses them (404 unknown call, 401).

daphne answers every refused WebSocket handshake with 403. ASGI's "WebSocket Denial Response"
extension (`websocket.http.response.start` before `websocket.accept`) lets an application choose
the status; daphne does not implement it, so this adds it. Only the embedded engine uses it: a
client of the real API must see the same handshake statuses from the stand-in.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from autobahn.websocket.types import ConnectionDeny
from daphne.ws_protocol import WebSocketProtocol

_original_handle_reply = WebSocketProtocol.handle_reply


def _handle_reply(self: WebSocketProtocol, message: dict[str, Any]) -> None:
    kind = message.get("type")
    if kind == "websocket.http.response.start" and self.state == self.STATE_CONNECTING:
        status = int(message["status"])
        self.handshake_deferred.errback(ConnectionDeny(code=status, reason=HTTPStatus(status).phrase))
        del self.handshake_deferred
        self.server.protocol_disconnected(self)
        return
    if kind == "websocket.http.response.body":
        return  # autobahn writes its own small body for a denied handshake
    _original_handle_reply(self, message)


def install() -> None:
    if WebSocketProtocol.handle_reply is not _handle_reply:
        WebSocketProtocol.handle_reply = _handle_reply
