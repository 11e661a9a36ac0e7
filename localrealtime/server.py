"""The engine's own server: OpenAI's HTTP and WebSocket surface (Starlette) on uvicorn.

The engine stands in for another service (OpenAI), so it is served as one: its own ASGI app on
its own port, never through our site's Django stack (sessions, CSRF, locale, origin checks).
Starlette gives routing, multipart forms and WebSockets; uvicorn implements the ASGI WebSocket
denial-response extension, so the sideband handshake is refused with 401/404 as OpenAI refuses
it, with no patch of the server.

`run(stop, host, port)` starts the engine's listeners on the running event loop and returns once
`stop` is set and they are closed: `manage.py localrealtime` runs it alone (the production-like
topology), `manage.py serve` beside the site on the site's loop (`make run`: one command).

HTTP routes, shaped like OpenAI's: POST /v1/realtime/calls, .../hangup and, for phone calls,
.../accept, .../reject and .../refer; the sideband socket GET /v1/realtime?call_id=... . Beside
the HTTP listener, `run` starts the SIP side (`localrealtime.sip`: SIP over UDP and TCP, G.711
RTP) on LOCALREALTIME_SIP_PORT. `/v1/_local/...` are the engine's own controls (scripted faults,
call inspection) for tests and benchmarks; OpenAI has no such endpoints and the broker never
calls them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import protocol
from .engine import Fault, LocalCall, Sideband, engine
from .sip import run_sip
from .sip.control import configure_sip, sip_operation

logger = logging.getLogger(__name__)

PREFIX = "/v1"
MAX_BODY_BYTES = 1024 * 1024
_SDP_REQUIRED = ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:")


class ResetConnection(Exception):
    """Answer nothing: reset the TCP connection under this request (a scripted fault)."""


# --- the one error path ----------------------------------------------------------------------


def _error_response(exc: protocol.ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), exc.status)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, protocol.ApiError)
    return _error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (unknown path, wrong method) in OpenAI's error shape, not Starlette's text."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return _error_response(protocol.ApiError(405, f"Method {request.method} not allowed.", code="method_not_allowed"))
    return _error_response(protocol.ApiError(exc.status_code, "Not found." if exc.status_code == 404 else str(exc.detail)))


async def _reset(request: Request, exc: Exception) -> Response:
    server: EngineServer | None = getattr(request.app.state, "server", None)
    if server is not None and request.client is not None and server.reset(request.client.host, request.client.port):
        return Response(status_code=502)  # never sent: the connection is gone
    # Served by something that cannot reset: a bare 502 from a "proxy" stands in for it.
    return Response(b"connection reset", 502, media_type="text/plain")


class BodyLimit:
    """Refuse bodies over MAX_BODY_BYTES (413) while they arrive, before holding them whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise protocol.ApiError(413, "Request too large.")
            return message

        await self.app(scope, limited, send)


# Names the engine always answers to: it listens on loopback, and the broker reaches it there.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


def allowed_hosts() -> list[str]:
    """Loopback names, the address the engine listens on, and the site's ALLOWED_HOSTS."""
    return [*LOOPBACK_HOSTS, settings.LOCALREALTIME_HOST, *settings.ALLOWED_HOSTS]


class HostCheck:
    """Refuse a request whose Host is not one of `allowed_hosts()` (400; a WebSocket: closed).

    A page that rebinds its own DNS name to 127.0.0.1 could otherwise script the engine (its faults,
    its calls) with the public default key. Starlette's TrustedHostMiddleware does this check, but
    with its own pattern syntax ("*.example.com") and a plain-text refusal; the hosts here are
    Django's ALLOWED_HOSTS, so Django's own `validate_host` reads them as Django does (".example.com",
    "*"), and the refusal is in OpenAI's error shape, like everything the engine answers: the SDK
    the broker uses surfaces it as any OpenAI error.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        domain, _port = split_domain_port(raw)
        if domain and validate_host(domain, allowed_hosts()):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before the handshake: uvicorn answers 403
            return
        refusal = protocol.ApiError(400, "Invalid host header.", code="invalid_host", param="Host")
        await _error_response(refusal)(scope, receive, send)


def _key(headers: Any) -> str:
    header = headers.get("authorization", "")
    return header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""


def _authorized(headers: Any) -> bool:
    return hmac.compare_digest(_key(headers).encode(), settings.LOCALREALTIME_API_KEY.encode())


def _authenticate(request: Request) -> None:
    if not _authorized(request.headers):
        key = _key(request.headers)
        shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
        raise protocol.ApiError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")


def authenticated(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        _authenticate(request)
        return await handler(request)

    return endpoint


def _call_not_found(call_id: str, **kwargs: Any) -> protocol.ApiError:
    return protocol.ApiError(404, f"Call '{call_id[:100]}' not found.", code="call_not_found", **kwargs)


# --- OpenAI's endpoints ----------------------------------------------------------------------


async def _apply_fault(op: str) -> Response | None:
    engine.requests[op] += 1
    fault = engine.take_fault(op)
    delay = fault.delay_ms if fault else 0
    if op == "create":
        delay += settings.LOCALREALTIME_ANSWER_DELAY_MS
    if delay:
        await asyncio.sleep(delay / 1000)
    if fault is None:
        return None
    if fault.reset:
        raise ResetConnection
    if fault.body == "malformed":
        return Response(b"<html>upstream hiccup</html>", 201, media_type="text/html")
    if fault.status:
        kind = "rate_limit_error" if fault.status == 429 else ("server_error" if fault.status >= 500 else "invalid_request_error")
        response = _error_response(protocol.ApiError(fault.status, f"Scripted fault ({fault.status}).", code="scripted_fault", kind=kind))
        if fault.retry_after:
            response.headers["retry-after"] = fault.retry_after
        return response
    return None


def _check_offer(sdp: str) -> None:
    text = sdp.strip()
    if not text.startswith("v=0") or "m=audio" not in text or not all(attr in text for attr in _SDP_REQUIRED):
        raise protocol.ApiError(400, "Invalid SDP offer. Please try again with a WHIP-compliant offer.", code="invalid_offer")


async def _form(request: Request) -> dict[str, str]:
    """The parts of a multipart/form-data body by name (files and plain fields alike)."""
    fields: dict[str, str] = {}
    async with request.form() as form:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                fields[name] = (await value.read()).decode("utf-8", errors="replace")
            else:
                fields[name] = value
    return fields


@authenticated
async def calls(request: Request) -> Response:
    """POST /v1/realtime/calls: multipart `sdp` (+ optional `session`) in, 201 SDP answer out."""
    if faulted := await _apply_fault("create"):
        return faulted
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "multipart/form-data":
        # Raw application/sdp is reserved for ephemeral keys, which this engine does not mint.
        raise protocol.ApiError(400, "Expected multipart/form-data with an 'sdp' part.", code="invalid_request")
    fields = await _form(request)
    for name in fields:
        if name not in ("sdp", "session"):
            raise protocol.ApiError(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    if "sdp" not in fields:
        raise protocol.ApiError(400, "Missing required parameter: 'sdp'.", param="sdp", code="missing_required_parameter")
    _check_offer(fields["sdp"])
    try:
        session = json.loads(fields["session"]) if "session" in fields else {"type": "realtime"}
    except ValueError:
        raise protocol.ApiError(400, "We could not parse the JSON body of 'session'.", param="session", code="invalid_json") from None
    call, answer = await engine.create(offer=fields["sdp"], session=protocol.check_session(session))
    return Response(answer.encode(), 201, {"location": f"{PREFIX}/realtime/calls/{call.id}"}, media_type="application/sdp")


@authenticated
async def hangup(request: Request) -> Response:
    """POST /v1/realtime/calls/{call_id}/hangup: 200 empty, 404 for an unknown or ended call."""
    if faulted := await _apply_fault("hangup"):
        return faulted
    call_id = request.path_params["call_id"]
    if not await engine.hangup(call_id):
        raise _call_not_found(call_id, param="call_id")
    return Response(status_code=200)


def sip_control(operation: str) -> Callable[[Request], Awaitable[Response]]:
    """POST .../accept (a GA session), .../reject ({"status_code"}), .../refer ({"target_uri"}) for a phone call."""

    @authenticated
    async def endpoint(request: Request) -> Response:
        if faulted := await _apply_fault(operation):
            return faulted
        call_id = request.path_params["call_id"]
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise protocol.ApiError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None
        if not await sip_operation(engine.sip, operation, call_id, body):
            raise _call_not_found(call_id, param="call_id")
        return Response(status_code=200)

    return endpoint


# --- the engine's own controls ---------------------------------------------------------------


@authenticated
async def sip_settings(request: Request) -> Response:
    """POST {"webhook_copies", "webhook_secret"}: how the SIP side delivers its next webhooks
    (copies: retries arriving as duplicates; secret: a wrong one, as a forged webhook would be)."""
    if engine.sip is None:
        raise protocol.ApiError(404, "The SIP endpoint is not running.", code="not_found")
    try:
        changes = configure_sip(engine.sip, json.loads(await request.body() or b"{}"))
    except (ValueError, TypeError) as exc:
        raise protocol.ApiError(400, f"Bad SIP settings: {exc}", code="invalid_value") from None
    return JSONResponse(changes)


@authenticated
async def faults(request: Request) -> Response:
    """POST: script a fault ({"op", "status", "delay_ms", "body", "retry_after", "count", "reset"});
    GET: the faults still waiting; DELETE: clear them."""
    if request.method == "DELETE":
        engine.faults.clear()
        return Response(status_code=204)
    if request.method == "GET":
        return JSONResponse({"data": [dataclasses.asdict(f) for f in engine.faults]})
    try:
        spec: dict[str, Any] = json.loads(await request.body())
        fault = Fault(**spec)
    except (ValueError, TypeError) as exc:
        raise protocol.ApiError(400, f"Bad fault: {exc}", code="invalid_value") from None
    if fault.op not in engine.requests or fault.op == "sip_invite":
        raise protocol.ApiError(400, "op must be 'create', 'hangup', 'accept', 'reject' or 'refer'.", param="op", code="invalid_value")
    engine.faults.append(fault)
    return JSONResponse(spec, 201)


@authenticated
async def call_detail(request: Request) -> Response:
    """GET: what the engine knows of a call (connection state, hangups received, close reason)."""
    call_id = request.path_params["call_id"]
    call = engine.find(call_id)
    sip = engine.sip.describe(call_id) if engine.sip else None
    if call is None and sip is None:
        raise _call_not_found(call_id)
    return JSONResponse({**(call.describe() if call else {"id": call_id}), "sip": sip})


@authenticated
async def drop_sideband(request: Request) -> Response:
    """POST: make the call's sideband sockets fail (close 3008, timeout) while the call goes on.

    `?fatal=1`: end them with a fatal session error instead (`error` event, close 4000).
    """
    call_id = request.path_params["call_id"]
    call = engine.calls.get(call_id)
    if call is None:
        raise _call_not_found(call_id)
    return JSONResponse({"dropped": engine.drop_sidebands(call, fatal=request.query_params.get("fatal") == "1")})


@authenticated
async def stats(request: Request) -> Response:
    """GET: requests received per operation, and the calls running now (leak checks)."""
    return JSONResponse({"requests": dict(engine.requests), "live_calls": len(engine.calls)})


# --- the sideband WebSocket ------------------------------------------------------------------


async def sideband(websocket: WebSocket) -> None:
    """`GET /v1/realtime?call_id=...`, as OpenAI serves it for WebRTC/SIP calls.

    A server joins a running call with its API key and receives every server event of the call
    (the same stream the caller's data channel gets) and may send client events. The handshake is
    refused with 401 for a bad key and 404 for an unknown or ended call; the socket closes when
    the call ends.
    """
    if not _authorized(websocket.headers):
        await websocket.send_denial_response(Response(status_code=401))
        return
    call = engine.calls.get(websocket.query_params.get("call_id", ""))
    if call is None:
        await websocket.send_denial_response(Response(status_code=404))
        return
    await websocket.accept()
    if "openai-beta" in websocket.headers:
        # The beta interface is gone: OpenAI answers its header with an error and close 4000.
        event = protocol.error_event("The beta API shape is disabled; remove the OpenAI-Beta header.", code="beta_api_shape_disabled")
        await websocket.send_text(json.dumps(event))
        await websocket.close(code=4000)
        return
    outbox = engine.attach_sideband(call)
    forward = asyncio.ensure_future(_forward(websocket, outbox))
    read = asyncio.ensure_future(_read(websocket, call))
    try:
        await asyncio.wait((forward, read), return_when=asyncio.FIRST_COMPLETED)
    finally:
        engine.detach_sideband(call, outbox)
        for task in (forward, read):
            task.cancel()
        await asyncio.gather(forward, read, return_exceptions=True)


async def _forward(websocket: WebSocket, outbox: Sideband) -> None:
    """Send the call's events in order; close when the call ends."""
    while (event := await outbox.queue.get()) is not None:
        if event is Sideband.DROP:
            await websocket.close(code=3008)
            return
        if event is Sideband.FAIL:
            error = protocol.error_event("The server had an error while processing your session.", code="server_error")
            error["error"]["type"] = "server_error"
            await websocket.send_text(json.dumps(error))
            await websocket.close(code=4000)
            return
        await websocket.send_text(json.dumps(event))
    await websocket.close(code=1000)


async def _read(websocket: WebSocket, call: LocalCall) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            engine.receive(call, message.get("text") if message.get("text") is not None else message.get("bytes"))


def _build() -> Starlette:
    routes = [
        Route(f"{PREFIX}/realtime/calls", calls, methods=["POST"]),
        Route(f"{PREFIX}/realtime/calls/{{call_id}}/hangup", hangup, methods=["POST"]),
        *(Route(f"{PREFIX}/realtime/calls/{{call_id}}/{op}", sip_control(op), methods=["POST"]) for op in ("accept", "reject", "refer")),
        WebSocketRoute(f"{PREFIX}/realtime", sideband),
        Route(f"{PREFIX}/_local/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route(f"{PREFIX}/_local/stats", stats, methods=["GET"]),
        Route(f"{PREFIX}/_local/sip", sip_settings, methods=["POST"]),
        Route(f"{PREFIX}/_local/calls/{{call_id}}", call_detail, methods=["GET"]),
        Route(f"{PREFIX}/_local/calls/{{call_id}}/drop_sideband", drop_sideband, methods=["POST"]),
    ]
    handlers = {protocol.ApiError: _api_error, HTTPException: _http_error, ResetConnection: _reset}
    return Starlette(routes=routes, middleware=[Middleware(HostCheck), Middleware(BodyLimit)], exception_handlers=handlers)


application = _build()


# --- serving ---------------------------------------------------------------------------------


class EngineServer(uvicorn.Server):
    """uvicorn, hosted inside a process that owns its signals (`manage.py serve`, or `manage.py localrealtime`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would install its own SIGINT/SIGTERM handlers and re-raise the signal on exit;
        # the hosting command decides when to stop, and sets `should_exit` through `run`'s `stop`.
        yield

    def reset(self, host: str, port: int) -> bool:
        """Reset the TCP connection from (host, port): RST, no response (a scripted fault).

        ASGI has no message for this; the connection is found among this server's own and
        closed through asyncio's transport API, with SO_LINGER 0 turning the close into a reset.
        """
        for connection in self.server_state.connections:
            transport: asyncio.Transport | None = getattr(connection, "transport", None)
            if transport is None or transport.get_extra_info("peername")[:2] != (host, port):
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return True
        return False


# Longer than any client of ours keeps an idle connection (the SDK's httpx: 5 s); see config().
KEEP_ALIVE_SECONDS = 30


def config(host: str, port: int) -> uvicorn.Config:
    """The engine's HTTP and WebSocket server on host:port."""
    return uvicorn.Config(
        application,
        host=host,
        port=port,
        # wsproto: of uvicorn's WebSocket implementations, the one that completes a denied handshake
        # cleanly (websockets' Sans-I/O one logs the denial as an unfinished handshake; the
        # legacy one is deprecated).
        ws="wsproto",
        lifespan="off",
        # A burst of call setups must not find the listen queue full (the default is 2048 too).
        backlog=1024,
        log_config=None,
        access_log=False,
        # Calls are ended, not drained: a graceful stop must not wait for live sideband sockets.
        timeout_graceful_shutdown=1,
        # Idle keep-alive connections outlive the SDK's own expiry (5 s, httpx's default): with
        # both at 5 s, a client could send a create on a connection the engine was closing, and a
        # POST is not retried ("OpenAI est injoignable", 502: 3-4 creates of 3,000 in a churn at
        # 50 calls/s, bench/scaled.py).
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


async def run(stop: asyncio.Event, host: str, port: int, *, ready: Callable[[str, int], None] | None = None) -> None:
    """Serve the engine on host:port on the running loop until `stop` is set.

    The place to start any further listener of the engine (SIP, say) beside the HTTP one.
    `ready(host, port)` is called once it listens (port 0 binds a free port).
    """
    server = EngineServer(config(host, port))
    application.state.server = server

    async def serve() -> None:
        try:
            await server.serve()
        except SystemExit as exc:
            # uvicorn exits the process when it cannot start (its port taken, say); the hosting
            # command decides what that means.
            raise RuntimeError(f"the local engine could not listen on {host}:{port}") from exc

    serving = asyncio.ensure_future(serve())
    sip: asyncio.Future[None] | None = None
    try:
        while not server.started:
            if serving.done():
                await serving  # raises why it could not start
                raise RuntimeError("the engine's server stopped before it started")
            await asyncio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()
        logger.info("Local Realtime engine listening on http://%s:%s%s", bound[0], bound[1], PREFIX)
        # OpenAI's SIP side on the same loop (its calls share the engine's registry and VAD).
        sip = asyncio.ensure_future(run_sip(engine, stop))
        await asyncio.wait((sip, asyncio.ensure_future(asyncio.sleep(0.2))), return_when=asyncio.FIRST_COMPLETED)
        if sip.done():
            await sip  # raises why it could not listen (its port taken, say)
        if ready is not None:
            ready(bound[0], bound[1])
        await asyncio.wait((serving, sip, asyncio.ensure_future(stop.wait())), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if sip is not None:
            stop.set()
            await asyncio.gather(sip, return_exceptions=True)
        # End the engine's calls first: their sideband sockets close, and aiortc stops cleanly.
        for call in list(engine.calls.values()):
            await engine.close(call, reason="shutdown")
        server.should_exit = True
        await serving
