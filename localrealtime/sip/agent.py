"""The engine's SIP user agent: OpenAI's side of a phone call, on loopback UDP and TCP.

A call to `sip:<project id>@<host>:<port>` is answered as OpenAI's SIP trunk answers it:
100 Trying at once, a signed `realtime.call.incoming` webhook to the broker, then whatever the
broker decides through the engine's REST endpoints: accept (180, then 200 with a G.711 answer,
resent until the ACK), reject (the chosen status), or nothing (the call is refused after
LOCALREALTIME_SIP_DECIDE_SECONDS). A CANCEL gets 200 and the INVITE 487, and a later accept 404.
Once answered, the call is an engine call like a WebRTC one (same VAD, events, sideband); hangup
sends BYE to the caller's Contact, refer sends a REFER and follows the caller's NOTIFYs.

Messages are parsed and built with `sipmessage`; only the dialog logic is ours. It is a small
UA for one purpose, not a SIP stack: no authentication, no forking, no re-INVITE (answered 488).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings
from sipmessage import URI, CSeq, Message, Request, Response

from .. import protocol
from ..engine import Engine, LocalCall
from . import media, webhook

logger = logging.getLogger(__name__)

PHRASES = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    503: "Service Unavailable",
    603: "Decline",
}
# RFC 3261 timers: T1 (RTT estimate) doubles up to T2 between retransmissions, for 64*T1 at most.
T1, T2 = 0.5, 4.0
MAX_MESSAGE_BYTES = 64 * 1024
# Calls ringing, running or just ended that the agent keeps at once; beyond, INVITEs get 503.
MAX_DIALOGS = 1000
# Transfer progress notes kept per call (the REFER, its answer, the caller's NOTIFYs).
MAX_NOTES = 20
# Headers never relayed in the webhook (OpenAI strips credentials).
PRIVATE_HEADERS = frozenset({"authorization", "proxy-authorization"})


class Link:
    """Where a dialog's messages go: a UDP peer address, or the TCP connection the INVITE came on."""

    def __init__(self, *, transport: str, send: Callable[[bytes, tuple[str, int]], None], peer: tuple[str, int]):
        self.transport, self._send, self.peer = transport, send, peer

    def send(self, message: Request | Response, to: tuple[str, int] | None = None) -> None:
        self._send(bytes(message), to or self.peer)


@dataclass
class Dialog:
    call_id: str
    invite: Request
    link: Link
    offer: media.Offer
    local_tag: str = field(default_factory=lambda: secrets.token_hex(6))
    state: str = "ringing"  # ringing -> answering -> confirmed -> ended; or rejected / cancelled
    local_cseq: int = 0
    final: Response | None = None
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    rtp: media.RtpSession | None = None
    call: LocalCall | None = None
    notifications: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # perf_counter() when the webhook went out and when the broker's decision came back.
    announced_at: float | None = None
    decided_at: float | None = None

    @property
    def sip_call_id(self) -> str:
        return self.invite.call_id

    def describe(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "transport": self.link.transport,
            "final_status": self.final.code if self.final else None,
            "notifications": self.notifications,
            "media": self.rtp.describe() if self.rtp else None,
            "decision_ms": round((self.decided_at - self.announced_at) * 1000, 2)
            if self.decided_at is not None and self.announced_at is not None
            else None,
        }


class SipAgent:
    def __init__(self, engine: Engine, *, host: str, port: int, project_id: str, webhook_url: str, webhook_secret: str):
        self.engine, self.host, self.port, self.project_id = engine, host, port, project_id
        self.webhook_url, self.webhook_secret = webhook_url, webhook_secret
        self.dialogs: dict[str, Dialog] = {}  # by SIP Call-ID
        self.by_call: dict[str, Dialog] = {}  # by rtc_ call id
        self.http = httpx.AsyncClient(timeout=10)
        self.webhook_copies = 1
        self._background: set[asyncio.Task[Any]] = set()

    # --- transport ----------------------------------------------------------------------------

    def received(self, data: bytes, link: Link) -> None:
        if not data.strip():
            return  # CRLF keep-alive
        try:
            message = Message.parse(data)
        except (ValueError, UnicodeDecodeError, KeyError):
            logger.info("Unparsable SIP message from %s (%d bytes)", link.peer, len(data))
            return
        try:
            if isinstance(message, Request):
                self._request(message, link)
            else:
                self._response(message)
        except (ValueError, KeyError) as exc:
            # A header sipmessage could not parse (or a missing one): answer 400 when we can.
            logger.info("Bad SIP message from %s: %s", link.peer, exc)
            if isinstance(message, Request) and message.method != "ACK":
                with contextlib.suppress(ValueError, KeyError):
                    link.send(self._reply(message, 400))

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- building messages ---------------------------------------------------------------------

    def _reply(self, request: Request, code: int, *, tag: str | None = None, body: bytes = b"", **extra: str) -> Response:
        response = Response(code, PHRASES.get(code, "Status"))
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in request.headers.getlist(name):
                if name == "To" and tag and ";tag=" not in value:
                    value = f"{value};tag={tag}"
                response.headers.add(name, value)
        response.headers.add("Server", "localrealtime")
        for name, value in extra.items():
            response.headers.add(name.replace("_", "-"), value)
        if body:
            # Always say what the body is (an answer without Content-Type made Asterisk hang up).
            response.headers.add("Content-Type", "application/sdp")
        response.headers.add("Content-Length", str(len(body)))
        response.body = body
        return response

    def _contact(self, link: Link) -> str:
        suffix = ";transport=tcp" if link.transport == "TCP" else ""
        return f"<sip:{self.project_id}@{self.host}:{self.port}{suffix}>"

    def _in_dialog(self, dialog: Dialog, method: str, **extra: str) -> tuple[Request, tuple[str, int]]:
        """A request we send inside the dialog, to the caller's Contact (RFC 3261 12.2.1.1)."""
        invite = dialog.invite
        try:
            contact = invite.contact[0].uri if invite.contact else invite.from_address.uri
        except (ValueError, KeyError):
            contact = URI(scheme="sip", host=dialog.link.peer[0], port=dialog.link.peer[1])
        request = Request(method, contact)
        dialog.local_cseq += 1
        request.headers.add("Via", f"SIP/2.0/{dialog.link.transport} {self.host}:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport")
        request.headers.add("Max-Forwards", "70")
        request.headers.add("From", f"{invite.headers['To']};tag={dialog.local_tag}")
        request.headers.add("To", invite.headers["From"])
        request.headers.add("Call-ID", invite.call_id)
        request.headers.add("CSeq", str(CSeq(sequence=dialog.local_cseq, method=method)))
        request.headers.add("Contact", self._contact(dialog.link))
        for name, value in extra.items():
            request.headers.add(name.replace("_", "-"), value)
        request.headers.add("Content-Length", "0")
        # Only to the address the call came from: a Contact naming another host would make this
        # endpoint send requests wherever a caller asks.
        target = (contact.host, contact.port or 5060) if contact.host == dialog.link.peer[0] else dialog.link.peer
        return request, target

    def _send_in_dialog(self, dialog: Dialog, method: str, **extra: str) -> None:
        request, target = self._in_dialog(dialog, method, **extra)
        # Over TCP the caller's connection carries it; over UDP, its Contact address.
        dialog.link.send(request, None if dialog.link.transport == "TCP" else target)

    # --- requests from the caller ----------------------------------------------------------------

    def _request(self, request: Request, link: Link) -> None:
        method = request.method
        dialog = self.dialogs.get(request.call_id)
        if method == "INVITE":
            if dialog is None:
                self._invite(request, link)
            elif request.cseq.sequence == dialog.invite.cseq.sequence:
                # A retransmission: repeat what we last said.
                link.send(dialog.final or self._reply(request, 100))
            else:
                link.send(self._reply(request, 488, tag=dialog.local_tag))  # no re-INVITE here
        elif method == "ACK":
            if dialog is not None:
                dialog.acked.set()
                if dialog.state == "answering":
                    dialog.state = "confirmed"
        elif method == "CANCEL":
            self._cancel(request, dialog, link)
        elif method == "BYE":
            if dialog is None or dialog.state not in ("answering", "confirmed"):
                link.send(self._reply(request, 481))
                return
            link.send(self._reply(request, 200))
            self._spawn(self._end(dialog, reason="caller_hangup"))
        elif method == "NOTIFY":
            link.send(self._reply(request, 200 if dialog else 481))
            if dialog is not None:
                self._notified(dialog, request)
        elif method == "OPTIONS":
            link.send(self._reply(request, 200, Allow="INVITE, ACK, CANCEL, BYE, NOTIFY, OPTIONS"))
        else:
            link.send(self._reply(request, 405, Allow="INVITE, ACK, CANCEL, BYE, NOTIFY, OPTIONS"))

    def _invite(self, request: Request, link: Link) -> None:
        if len(self.dialogs) >= MAX_DIALOGS:
            # A flood of INVITEs must not become a flood of webhooks and sockets.
            link.send(self._reply(request, 503, tag=secrets.token_hex(6), Retry_After="5"))
            return
        if request.uri.user != self.project_id:
            link.send(self._reply(request, 404, tag=secrets.token_hex(6)))
            return
        offer = media.parse_offer(request.body.decode("utf-8", errors="replace"))
        if offer is None or media.choose_codec(offer, settings.LOCALREALTIME_SIP_CODECS) is None:
            link.send(self._reply(request, 488, tag=secrets.token_hex(6)))
            return
        dialog = Dialog(call_id=protocol.new_id("rtc", length=32), invite=request, link=link, offer=offer)
        self.dialogs[request.call_id] = dialog
        self.by_call[dialog.call_id] = dialog
        link.send(self._reply(request, 100))
        headers = [
            {"name": name, "value": value}
            for name in request.headers.keys()
            if name.lower() not in PRIVATE_HEADERS
            for value in request.headers.getlist(name)
        ]
        self.engine.requests["sip_invite"] += 1
        dialog.tasks.append(self._spawn(self._announce(dialog, headers)))
        dialog.tasks.append(self._spawn(self._decide_deadline(dialog)))

    async def _announce(self, dialog: Dialog, headers: list[dict[str, str]]) -> None:
        event = webhook.call_incoming(call_id=dialog.call_id, sip_headers=headers)
        webhook_id = protocol.new_id("wh", length=32)
        dialog.announced_at = time.perf_counter()
        for _ in range(self.webhook_copies):
            await webhook.deliver(self.http, url=self.webhook_url, secret=self.webhook_secret, event=event, webhook_id=webhook_id)

    async def _decide_deadline(self, dialog: Dialog) -> None:
        await asyncio.sleep(settings.LOCALREALTIME_SIP_DECIDE_SECONDS)
        if dialog.state == "ringing":
            logger.info("SIP call %s: no accept or reject in time", dialog.call_id)
            self._final(dialog, settings.LOCALREALTIME_SIP_DECIDE_STATUS, state="rejected")

    def _cancel(self, request: Request, dialog: Dialog | None, link: Link) -> None:
        if dialog is None:
            link.send(self._reply(request, 481))
            return
        link.send(self._reply(request, 200))
        if dialog.state == "ringing":
            self._final(dialog, 487, state="cancelled")

    def _notified(self, dialog: Dialog, request: Request) -> None:
        """The transferee's progress (RFC 3515 sipfrag): a 2xx means the transfer succeeded."""
        fragment = request.body.decode("utf-8", errors="replace").strip().split("\r\n", 1)[0][:100]
        del dialog.notifications[:-MAX_NOTES]
        dialog.notifications.append(fragment)
        parts = fragment.split(" ", 2)
        if len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 300 and settings.LOCALREALTIME_SIP_BYE_AFTER_REFER:
            if dialog.call is not None:
                self._spawn(self.engine.close(dialog.call, reason="transferred"))

    def _response(self, response: Response) -> None:
        # Answers to our BYE and REFER: nothing waits on them (OpenAI reports no transfer outcome).
        dialog = self.dialogs.get(response.call_id)
        if dialog is not None and response.cseq.method == "REFER":
            dialog.notifications.append(f"REFER {response.code}")

    # --- final responses to the INVITE ---------------------------------------------------------

    def _final(self, dialog: Dialog, code: int, *, state: str, body: bytes = b"", **extra: str) -> None:
        dialog.state = state
        dialog.final = self._reply(dialog.invite, code, tag=dialog.local_tag, body=body, **extra)
        dialog.link.send(dialog.final)
        if dialog.link.transport == "UDP":
            dialog.tasks.append(self._spawn(self._retransmit(dialog)))
        if code >= 300:
            self.by_call.pop(dialog.call_id, None)
            self._spawn(self._forget(dialog))

    async def _retransmit(self, dialog: Dialog) -> None:
        """Resend the final response until the ACK (RFC 3261 13.3.1.4 and 17.2.1)."""
        interval, waited = T1, 0.0
        while waited < 64 * T1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dialog.acked.wait(), interval)
                return
            waited += interval
            interval = min(interval * 2, T2)
            if dialog.final is not None:
                dialog.link.send(dialog.final)
        if dialog.state == "answering" and dialog.call is not None:
            logger.info("SIP call %s: no ACK for the 200; hanging up", dialog.call_id)
            await self.engine.close(dialog.call, reason="no_ack")

    async def _forget(self, dialog: Dialog) -> None:
        # Kept a while after the end, to absorb retransmissions and late ACKs.
        await asyncio.sleep(64 * T1)
        self.dialogs.pop(dialog.sip_call_id, None)

    # --- what the broker asks through the REST endpoints --------------------------------------

    def pending(self, call_id: str) -> Dialog | None:
        dialog = self.by_call.get(call_id)
        if dialog is None or dialog.state != "ringing":
            return None
        dialog.decided_at = time.perf_counter()
        return dialog

    async def accept(self, call_id: str, session: dict[str, Any]) -> bool:
        """Answer a ringing call with `session`. False when the caller is gone (404 upstream)."""
        dialog = self.pending(call_id)
        if dialog is None:
            return False
        codec = media.choose_codec(dialog.offer, settings.LOCALREALTIME_SIP_CODECS)
        assert codec is not None  # checked on the INVITE
        dialog.state = "answering"
        effective = protocol.effective_session(
            session, session_id=protocol.new_id("sess"), expires_at=protocol.expires_at(settings.LOCALREALTIME_MAX_SESSION_SECONDS)
        )
        call = LocalCall(id=call_id, session=effective, pc=None)
        dialog.call = call

        def digit(value: str) -> None:
            event = protocol.server_event("input_audio_buffer.dtmf_event_received", event=value, received_at=int(time.time()))
            self.engine.emit(call, event)

        dialog.rtp = await media.open_rtp(
            host=self.host,
            codec=codec[0],
            remote=(dialog.offer.host, dialog.offer.port),
            dtmf_payload_type=dialog.offer.dtmf_payload_type,
            on_digit=digit,
        )
        call.on_close = lambda reason: self._closed(dialog, reason)
        self.engine.adopt(call, audio=dialog.rtp.audio)
        dialog.link.send(self._reply(dialog.invite, 180, tag=dialog.local_tag))
        answer = media.answer_sdp(host=self.host, port=dialog.rtp.port, codec=codec[0], dtmf_payload_type=dialog.offer.dtmf_payload_type)
        self._final(dialog, 200, state="answering", body=answer.encode(), Contact=self._contact(dialog.link))
        return True

    def reject(self, call_id: str, status: int) -> bool:
        dialog = self.pending(call_id)
        if dialog is None:
            return False
        self._final(dialog, status, state="rejected")
        return True

    def refer(self, call_id: str, target_uri: str) -> bool:
        dialog = self.by_call.get(call_id)
        if dialog is None or dialog.state not in ("answering", "confirmed"):
            return False
        self._send_in_dialog(dialog, "REFER", Refer_To=f"<{target_uri}>", Referred_By=f"<sip:{self.project_id}@{self.host}>")
        dialog.notifications.append(f"REFER {target_uri[:200]}")
        return True

    async def _end(self, dialog: Dialog, *, reason: str) -> None:
        if dialog.call is not None:
            await self.engine.close(dialog.call, reason=reason)

    async def _closed(self, dialog: Dialog, reason: str) -> None:
        """The engine closed the call: stop the media, and send BYE unless the caller left first."""
        previous, dialog.state = dialog.state, "ended"
        if dialog.rtp is not None:
            dialog.rtp.close()
        if reason != "caller_hangup" and previous in ("answering", "confirmed"):
            self._send_in_dialog(dialog, "BYE")
        for task in dialog.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.by_call.pop(dialog.call_id, None)
        self._spawn(self._forget(dialog))

    def describe(self, call_id: str) -> dict[str, Any] | None:
        dialog = self.by_call.get(call_id) or next((d for d in self.dialogs.values() if d.call_id == call_id), None)
        return dialog.describe() if dialog else None


# --- the listeners -----------------------------------------------------------------------------


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, agent: SipAgent):
        self.agent = agent
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        transport = self.transport
        self.agent.received(data, Link(transport="UDP", send=lambda raw, to: transport.sendto(raw, to), peer=addr))


async def _tcp_connection(agent: SipAgent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One TCP connection: messages framed by Content-Length (RFC 3261 18.3)."""
    peer = writer.get_extra_info("peername")[:2]
    link = Link(transport="TCP", send=lambda raw, to: writer.write(raw), peer=peer)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_MESSAGE_BYTES:
                break
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() in (b"content-length", b"l") and value.strip().isdigit():
                    length = int(value.strip())
            if length > MAX_MESSAGE_BYTES:
                break
            body = await reader.readexactly(length) if length else b""
            agent.received(head + body, link)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def run_sip(engine: Engine, stop: asyncio.Event, *, host: str | None = None, port: int | None = None) -> None:
    """Serve SIP on `host`:`port` (UDP and TCP) for `engine` until `stop` is set."""
    host = host or settings.LOCALREALTIME_SIP_HOST
    port = settings.LOCALREALTIME_SIP_PORT if port is None else port
    loop = asyncio.get_running_loop()
    agent = SipAgent(
        engine,
        host=host,
        port=port,
        project_id=settings.LOCALREALTIME_PROJECT_ID,
        webhook_url=settings.LOCALREALTIME_SIP_WEBHOOK_URL,
        webhook_secret=settings.LOCALREALTIME_WEBHOOK_SECRET,
    )
    agent.webhook_copies = settings.LOCALREALTIME_SIP_WEBHOOK_COPIES
    udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(agent), local_addr=(host, port))
    tcp = await asyncio.start_server(lambda r, w: _tcp_connection(agent, r, w), host, port)
    engine.sip = agent
    print(f"Local SIP endpoint: sip:{agent.project_id}@{host}:{port} (UDP and TCP); webhooks to {agent.webhook_url}", flush=True)
    try:
        await stop.wait()
    finally:
        engine.sip = None
        udp.close()
        tcp.close()
        await agent.http.aclose()
