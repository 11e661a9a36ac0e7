"""The engine's HTTP surface, shaped like OpenAI's: POST /v1/realtime/calls and .../hangup.

`/v1/_local/...` are the engine's own controls (scripted faults, call inspection) for tests and
benchmarks; OpenAI has no such endpoints and the broker never calls them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
from typing import Any

from django.conf import settings

from . import protocol
from .engine import Fault, engine
from .http import Request, Response, Router
from .sip.control import configure_sip, sip_operation

_SDP_REQUIRED = ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:")


def _error(exc: protocol.ApiError) -> Response:
    return Response.json(exc.body(), exc.status)


def _authenticate(request: Request) -> None:
    header = request.headers.get("authorization", "")
    key = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    if not hmac.compare_digest(key.encode(), settings.LOCALREALTIME_API_KEY.encode()):
        shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
        raise protocol.ApiError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")


def _method(request: Request, *allowed: str) -> None:
    if request.method not in allowed:
        raise protocol.ApiError(405, f"Method {request.method} not allowed.", code="method_not_allowed")


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
        # Where the server cannot reset, a bare 502 from a "proxy" stands in for it.
        return Response(502, b"connection reset", {"content-type": "text/plain"}, reset=True)
    if fault.body == "malformed":
        return Response(201, b"<html>upstream hiccup</html>", {"content-type": "text/html"})
    if fault.status:
        kind = "rate_limit_error" if fault.status == 429 else ("server_error" if fault.status >= 500 else "invalid_request_error")
        response = _error(protocol.ApiError(fault.status, f"Scripted fault ({fault.status}).", code="scripted_fault", kind=kind))
        if fault.retry_after:
            response.headers["retry-after"] = fault.retry_after
        return response
    return None


def _check_offer(sdp: str) -> None:
    text = sdp.strip()
    if not text.startswith("v=0") or "m=audio" not in text or not all(attr in text for attr in _SDP_REQUIRED):
        raise protocol.ApiError(400, "Invalid SDP offer. Please try again with a WHIP-compliant offer.", code="invalid_offer")


async def calls(request: Request) -> Response:
    """POST /v1/realtime/calls: multipart `sdp` (+ optional `session`) in, 201 SDP answer out."""
    try:
        _method(request, "POST")
        _authenticate(request)
        if faulted := await _apply_fault("create"):
            return faulted
        if request.content_type != "multipart/form-data":
            # Raw application/sdp is reserved for ephemeral keys, which this engine does not mint.
            raise protocol.ApiError(400, "Expected multipart/form-data with an 'sdp' part.", code="invalid_request")
        fields = request.form()
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
    except protocol.ApiError as exc:
        return _error(exc)
    return Response(201, answer.encode(), {"content-type": "application/sdp", "location": f"/v1/realtime/calls/{call.id}"})


async def hangup(request: Request, call_id: str) -> Response:
    """POST /v1/realtime/calls/{call_id}/hangup: 200 empty, 404 for an unknown or ended call."""
    try:
        _method(request, "POST")
        _authenticate(request)
        if faulted := await _apply_fault("hangup"):
            return faulted
        if not await engine.hangup(call_id):
            raise protocol.ApiError(404, f"Call '{call_id[:100]}' not found.", param="call_id", code="call_not_found")
    except protocol.ApiError as exc:
        return _error(exc)
    return Response(200)


async def sip_control(request: Request, call_id: str, operation: str) -> Response:
    """POST .../accept (a GA session), .../reject ({"status_code"}), .../refer ({"target_uri"}) for a phone call."""
    try:
        _method(request, "POST")
        _authenticate(request)
        if faulted := await _apply_fault(operation):
            return faulted
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise protocol.ApiError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None
        if not await sip_operation(engine.sip, operation, call_id, body):
            raise protocol.ApiError(404, f"Call '{call_id[:100]}' not found.", param="call_id", code="call_not_found")
    except protocol.ApiError as exc:
        return _error(exc)
    return Response(200)


async def sip_settings(request: Request) -> Response:
    """POST {"webhook_copies", "webhook_secret"}: how the SIP side delivers its next webhooks
    (copies: retries arriving as duplicates; secret: a wrong one, as a forged webhook would be)."""
    try:
        _method(request, "POST")
        _authenticate(request)
        if engine.sip is None:
            raise protocol.ApiError(404, "The SIP endpoint is not running.", code="not_found")
        try:
            changes = configure_sip(engine.sip, json.loads(request.body or b"{}"))
        except (ValueError, TypeError) as exc:
            raise protocol.ApiError(400, f"Bad SIP settings: {exc}", code="invalid_value") from None
    except protocol.ApiError as exc:
        return _error(exc)
    return Response.json(changes)


async def faults(request: Request) -> Response:
    """POST: script a fault ({"op", "status", "delay_ms", "body", "retry_after", "count", "reset"});
    GET: the faults still waiting; DELETE: clear them."""
    try:
        _method(request, "GET", "POST", "DELETE")
        _authenticate(request)
        if request.method == "DELETE":
            engine.faults.clear()
            return Response(204)
        if request.method == "GET":
            return Response.json({"data": [dataclasses.asdict(f) for f in engine.faults]})
        try:
            spec: dict[str, Any] = json.loads(request.body)
            fault = Fault(**spec)
        except (ValueError, TypeError) as exc:
            raise protocol.ApiError(400, f"Bad fault: {exc}", code="invalid_value") from None
        if fault.op not in engine.requests or fault.op == "sip_invite":
            raise protocol.ApiError(400, "op must be 'create', 'hangup', 'accept', 'reject' or 'refer'.", param="op", code="invalid_value")
        engine.faults.append(fault)
    except protocol.ApiError as exc:
        return _error(exc)
    return Response.json(spec, 201)


async def call_detail(request: Request, call_id: str) -> Response:
    """GET: what the engine knows of a call (connection state, hangups received, close reason)."""
    try:
        _method(request, "GET")
        _authenticate(request)
        call = engine.find(call_id)
        sip = engine.sip.describe(call_id) if engine.sip else None
        if call is None and sip is None:
            raise protocol.ApiError(404, f"Call '{call_id[:100]}' not found.", code="call_not_found")
    except protocol.ApiError as exc:
        return _error(exc)
    return Response.json({**(call.describe() if call else {"id": call_id}), "sip": sip})


async def drop_sideband(request: Request, call_id: str) -> Response:
    """POST: make the call's sideband sockets fail (close 3008, timeout) while the call goes on.

    `?fatal=1`: end them with a fatal session error instead (`error` event, close 4000).
    """
    try:
        _method(request, "POST")
        _authenticate(request)
        call = engine.calls.get(call_id)
        if call is None:
            raise protocol.ApiError(404, f"Call '{call_id[:100]}' not found.", code="call_not_found")
    except protocol.ApiError as exc:
        return _error(exc)
    return Response.json({"dropped": engine.drop_sidebands(call, fatal=request.query.get("fatal") == "1")})


async def stats(request: Request) -> Response:
    """GET: requests received per operation, and the calls running now (leak checks)."""
    try:
        _method(request, "GET")
        _authenticate(request)
    except protocol.ApiError as exc:
        return _error(exc)
    return Response.json({"requests": dict(engine.requests), "live_calls": len(engine.calls)})


PREFIX = "/v1/"

application = Router(
    PREFIX,
    [
        ("realtime/calls", calls),
        ("realtime/calls/(?P<call_id>[^/]+)/hangup", hangup),
        ("realtime/calls/(?P<call_id>[^/]+)/(?P<operation>accept|reject|refer)", sip_control),
        ("_local/faults", faults),
        ("_local/stats", stats),
        ("_local/sip", sip_settings),
        ("_local/calls/(?P<call_id>[^/]+)", call_detail),
        ("_local/calls/(?P<call_id>[^/]+)/drop_sideband", drop_sideband),
    ],
)
