"""The only module that talks to OpenAI, through the official `openai` SDK.

Everything OpenAI-shaped stops here: callers get `CreatedCall` values and our own domain errors.
The embedded engine (`localrealtime`) speaks the same contract, so this code is what runs in tests
and in the offline demo too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import websockets
import websockets.proxy
import websockets.uri
from django.conf import settings
from django.utils.translation import gettext as _

from .exceptions import RealtimeError, UpstreamError, UpstreamThrottled, UpstreamTimeout

logger = logging.getLogger(__name__)

# One client per event loop: an httpx pool is bound to the loop that opened its connections.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[tuple[Any, ...], openai.AsyncOpenAI]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class CreatedCall:
    upstream_id: str
    sdp_answer: str


def api_key() -> str:
    return settings.OPENAI_API_KEY or settings.LOCALREALTIME_API_KEY


async def _whole_body(request: Any) -> None:
    # A multipart body not read yet reaches the transport as a stream, written to the socket piece
    # by piece: over httpx's own transport a create's two parts made ten send() calls (boundaries,
    # part headers and contents apart), each a trip through the kernel's TCP stack on the broker's
    # CPU. Read into memory first (a create is a few KB, an SDP and a session), the transport gets
    # it as bytes (aiohttp's as well: `request.content`) and sends it whole.
    await request.aread()


def client() -> openai.AsyncOpenAI:
    loop = asyncio.get_running_loop()
    config = (api_key(), settings.OPENAI_BASE_URL, settings.OPENAI_TIMEOUT)
    cached = _clients.get(loop)
    if cached is None or cached[0] != config:
        # max_retries=0: the SDK would retry a timed-out create, which can start a second call.
        # The SDK's aiohttp transport: a create costs 0.6–0.8 ms less CPU than over httpx's own
        # (6.7–7.1 ms of broker CPU instead of 7.1–8.2, docs/benchmarks.md), the same pool limits.
        http = openai.DefaultAioHttpClient(event_hooks={"request": [_whole_body]})
        sdk = openai.AsyncOpenAI(api_key=config[0], base_url=config[1], timeout=config[2], max_retries=0, http_client=http)
        _clients[loop] = (config, sdk)
        return sdk
    return cached[1]


def _error_details(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    return {
        "upstream_status": exc.status_code,
        "upstream_code": error.get("code") if isinstance(error, dict) else None,
        "upstream_message": (error.get("message") if isinstance(error, dict) else None) or str(exc.message)[:500],
    }


def _connection_failure(exc: openai.OpenAIError) -> BaseException | None:
    """The aiohttp error under an SDK error, when it is a failed connection and not a timeout.

    The SDK's aiohttp transport reports every connection error (refused, reset, closed by the
    server) as httpx's ConnectTimeout, which the SDK turns into APITimeoutError; aiohttp's own
    timeouts are TimeoutError.
    """
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientError):
            return None if isinstance(cause, TimeoutError) else cause
        cause = cause.__cause__
    return None


def _translate(exc: openai.OpenAIError) -> UpstreamError:
    """Map an SDK error to ours, keeping what OpenAI said in the details."""
    if (failure := _connection_failure(exc)) is not None:
        return UpstreamError(_("OpenAI could not be reached."), details={"reason": type(failure).__name__})
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout(_("OpenAI did not answer in time."), details={"timeout_seconds": settings.OPENAI_TIMEOUT})
    if isinstance(exc, openai.RateLimitError):
        retry_after = exc.response.headers.get("retry-after")
        details = _error_details(exc) | {"retry_after": retry_after}
        return UpstreamThrottled(
            _("OpenAI is rate limiting requests; try again later."),
            details=details,
            headers={"Retry-After": retry_after} if retry_after else None,
        )
    if isinstance(exc, openai.APIStatusError):
        return UpstreamError(
            _("OpenAI refused the request: %(message)s") % {"message": _error_details(exc)["upstream_message"]}, details=_error_details(exc)
        )
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamError(_("OpenAI could not be reached."), details={"reason": type(exc.__cause__ or exc).__name__})
    return UpstreamError(_("Unexpected answer from OpenAI."), details={"reason": type(exc).__name__})


async def create_call(*, sdp: str, session: dict[str, Any]) -> CreatedCall:
    """POST /v1/realtime/calls (multipart sdp + session); returns the rtc_ id and the SDP answer."""
    try:
        # ignore: the SDK types `session` as its TypedDict; ours is a plain dict already validated
        # against the same shape (realtime.sessions), and is sent as JSON as it is.
        result = await client().realtime.calls.create(sdp=sdp, session=session)  # type: ignore[arg-type]
    except openai.OpenAIError as exc:
        raise _translate(exc) from exc
    response = result.response
    location = response.headers.get("location", "")
    upstream_id = location.rstrip("/").rsplit("/", 1)[-1]
    answer = result.text
    if not upstream_id.startswith("rtc_") or not answer.lstrip().startswith("v=0"):
        raise UpstreamError(
            _("OpenAI sent an answer we cannot use."),
            details={"location": location[:200], "content_type": response.headers.get("content-type", "")},
        )
    return CreatedCall(upstream_id=upstream_id, sdp_answer=answer)


async def hangup_call(*, upstream_id: str) -> bool:
    """POST /v1/realtime/calls/{id}/hangup. True when hung up, False when OpenAI no longer knows it."""
    return await _call_control("hangup", upstream_id)


# --- phone calls (SIP): webhooks, accept, reject, refer ---------------------------------------


class WebhookRejected(RealtimeError):
    """A webhook whose signature is missing, wrong or outside the 300 s tolerance: not from OpenAI."""

    code = "invalid_webhook_signature"


@dataclass(frozen=True)
class Webhook:
    webhook_id: str
    event_type: str
    data: dict[str, Any]


def unwrap_webhook(*, body: bytes, headers: Any, secrets: list[str]) -> Webhook:
    """Verify a webhook with the SDK against each configured secret (two during a rotation), then parse it."""
    event: Any = None
    for secret in secrets:
        try:
            event = client().webhooks.unwrap(body, headers, secret=secret)
            break
        except openai.InvalidWebhookSignatureError:
            continue
        except (ValueError, RecursionError) as exc:
            # A missing header (the SDK's ValueError), a body that is not UTF-8 JSON, or one nested
            # deeper than the JSON parser goes (a signed `[[[[…`).
            raise WebhookRejected(_("The webhook is not signed as OpenAI signs them."), details={"reason": str(exc)[:200]}) from None
    if event is None:
        raise WebhookRejected(_("The webhook signature does not match, or its timestamp is too old."))
    payload = event.to_dict() if hasattr(event, "to_dict") else {}
    data = payload.get("data") if isinstance(payload, dict) else None
    return Webhook(
        webhook_id=str(headers.get("webhook-id", ""))[:100],
        event_type=str(getattr(event, "type", ""))[:80],
        data=data if isinstance(data, dict) else {},
    )


async def accept_call(*, upstream_id: str, session: dict[str, Any]) -> bool:
    """POST /v1/realtime/calls/{id}/accept with a GA session. False when the caller is gone (404)."""
    return await _call_control("accept", upstream_id, **session)


async def reject_call(*, upstream_id: str, status_code: int) -> bool:
    """POST /v1/realtime/calls/{id}/reject with a SIP status. False when the caller is gone (404)."""
    return await _call_control("reject", upstream_id, status_code=status_code)


async def refer_call(*, upstream_id: str, target_uri: str) -> bool:
    """POST /v1/realtime/calls/{id}/refer: a SIP REFER to `target_uri`. False when the call is gone (404)."""
    return await _call_control("refer", upstream_id, target_uri=target_uri)


async def _call_control(operation: str, upstream_id: str, **body: Any) -> bool:
    try:
        await getattr(client().realtime.calls, operation)(upstream_id, **body)
    except openai.NotFoundError:
        return False
    except openai.OpenAIError as exc:
        raise _translate(exc) from exc
    return True


# --- the sideband WebSocket ------------------------------------------------------------------


class SidebandGone(UpstreamError):
    """OpenAI no longer knows the call (the handshake answered 404): it has ended upstream."""

    code = "upstream_call_gone"


class SidebandFatal(UpstreamError):
    """OpenAI closed the sideband with an error code (4000-4999, 3000): the session is over."""

    code = "upstream_sideband_error"


class SidebandLost(UpstreamError):
    """The sideband could not be opened, or dropped without a closing handshake; worth retrying."""

    code = "upstream_sideband_lost"


class Sideband:
    """One open sideband socket: server events as plain dicts, client events sent as dicts.

    Events are not parsed into SDK models here: a monitor stores them as they came, and parsing
    thousands of events a second into pydantic models would cost more than storing them.
    """

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self.last_error: dict[str, Any] | None = None

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Yield events until OpenAI closes the socket cleanly; raise SidebandFatal/SidebandLost otherwise."""
        while True:
            try:
                raw = await self._connection.recv_bytes()
            except websockets.ConnectionClosedOK:
                return
            except websockets.ConnectionClosedError as exc:
                code = exc.rcvd.code if exc.rcvd else None
                details = {"close_code": code, "close_reason": exc.rcvd.reason if exc.rcvd else "", "error": self.last_error}
                if code is not None and (code == 3000 or 4000 <= code < 5000):
                    raise SidebandFatal(_("OpenAI ended the session with an error."), details=details) from exc
                raise SidebandLost(_("The connection to OpenAI dropped."), details=details) from exc
            try:
                event = json.loads(raw)
            except ValueError:
                logger.warning("Unparsable sideband message (%d bytes)", len(raw))
                continue
            if isinstance(event, dict) and isinstance(event.get("type"), str):
                if event["type"] == "error":
                    self.last_error = event.get("error")
                yield event


@functools.cache
def _sideband_proxy(base_url: str) -> str | None:
    """The proxy for the sideband's host, from the environment (`HTTPS_PROXY`, `NO_PROXY`, ...),
    as websockets picks it, once per process and base URL: websockets reads the environment again
    at every connection, 3 % of a worker's CPU in a churn of short calls (py-spy)."""
    scheme, _, rest = base_url.partition("://")
    uri = websockets.uri.parse_uri(f"{'wss' if scheme == 'https' else 'ws'}://{rest}")
    return websockets.proxy.get_proxy(uri)


@asynccontextmanager
async def connect_sideband(*, upstream_id: str) -> AsyncIterator[Sideband]:
    """Join a running call's sideband WebSocket (`GET /v1/realtime?call_id=rtc_...`) through the SDK."""
    # on_reconnecting=None: the SDK does not reconnect by itself; the monitor decides, because
    # only it knows whether the call is still ours and alive.
    sdk = client()
    # The proxy resolved once (see _sideband_proxy); the SDK hands its options to websockets.
    options: Any = {"proxy": _sideband_proxy(str(sdk.websocket_base_url or sdk.base_url))}
    manager = sdk.realtime.connect(call_id=upstream_id, websocket_connection_options=options)
    try:
        connection = await manager.enter()
    except websockets.InvalidStatus as exc:
        status = exc.response.status_code
        if status == 404:
            raise SidebandGone(_("OpenAI no longer knows this call."), details={"upstream_id": upstream_id}) from exc
        details = {"upstream_status": status, "upstream_id": upstream_id}
        raise SidebandLost(_("OpenAI refused the sideband connection (%(status)d).") % {"status": status}, details=details) from exc
    except (OSError, TimeoutError, websockets.WebSocketException, openai.OpenAIError) as exc:
        raise SidebandLost(_("OpenAI could not be reached."), details={"reason": type(exc).__name__}) from exc
    try:
        yield Sideband(connection)
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
