"""A minimal ASGI HTTP surface for the engine, outside Django's request stack.

The engine stands in for another service (OpenAI); it shares the server process but not our
site's middleware (sessions, CSRF, locale), and skipping Django's per-request thread hops keeps
a call setup as cheap as the peer it creates.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import socket
import struct
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

MAX_BODY_BYTES = 1024 * 1024


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def form(self) -> dict[str, str]:
        """The parts of a multipart/form-data body by name (files and plain fields alike)."""
        head = f"Content-Type: {self.headers.get('content-type', '')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + self.body)
        if not message.is_multipart():
            return {}
        fields: dict[str, str] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                payload = part.get_payload(decode=True) or b""
                fields[str(name)] = payload.decode("utf-8", errors="replace")
        return fields


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Answer nothing: reset the connection instead (a scripted fault).
    reset: bool = False

    @classmethod
    def json(cls, data: Any, status: int = 200, **headers: str) -> Response:
        return cls(status, json.dumps(data).encode(), {"content-type": "application/json", **headers})


Handler = Callable[..., Awaitable[Response]]


def reset_connection(send: Any) -> bool:
    """Reset the TCP connection under this request (RST, no response), where the server allows it.

    ASGI has no message for this, so it reaches daphne's transport through its `send` (a partial
    bound to the request's protocol). SO_LINGER 0 turns the close into a reset. Returns False
    when the server is not daphne; the caller then fails the request another way.
    """
    for candidate in getattr(send, "args", ()):
        transport = getattr(candidate, "transport", None)
        if transport is None or not hasattr(transport, "abortConnection"):
            continue
        handle = transport.getHandle() if hasattr(transport, "getHandle") else None
        if isinstance(handle, socket.socket):
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abortConnection()
        return True
    return False


class Router:
    """Routes by exact method-agnostic path patterns; handlers take (request, **path_params)."""

    def __init__(self, prefix: str, routes: list[tuple[str, Handler]]):
        self.routes = [(re.compile(f"^{re.escape(prefix)}{pattern}$"), handler) for pattern, handler in routes]

    def match(self, path: str) -> tuple[Handler, dict[str, str]] | None:
        for pattern, handler in self.routes:
            if found := pattern.match(path):
                return handler, found.groupdict()
        return None

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[Any]]) -> None:
        matched = self.match(scope["path"])
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                response = Response.json(
                    {"error": {"message": "Request too large.", "type": "invalid_request_error", "param": None, "code": None}}, 413
                )
                break
            if not message.get("more_body"):
                response = None
                break
        if response is None:
            if matched is None:
                response = Response.json(
                    {"error": {"message": "Not found.", "type": "invalid_request_error", "param": None, "code": None}}, 404
                )
            else:
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
                handler, params = matched
                query = dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1")))
                response = await handler(Request(scope["method"], scope["path"], headers, body, query), **params)
        if response.reset and reset_connection(send):
            return
        raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
        raw_headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": response.body})
