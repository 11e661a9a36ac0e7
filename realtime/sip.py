"""Phone calls: OpenAI's `realtime.call.incoming` webhook, and the routes that decide each call.

A call reaches OpenAI's SIP trunk; OpenAI POSTs a signed webhook here. We verify it (upstream),
record the call once per `webhook-id`, pick the first matching route, answer the webhook at once,
and carry out the decision (accept or reject) in the background on the server's loop, so OpenAI
never waits on our answer to its webhook.

Everything taken from the SIP headers is the caller's (or the carrier's) text: kept as text,
bounded in size, never interpreted beyond matching it against route patterns.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _
from sipmessage import Address

from . import services, upstream
from .exceptions import InvalidInput
from .models import Call, SipRoute
from .sessions import parse_session

logger = logging.getLogger(__name__)

INCOMING = "realtime.call.incoming"
MAX_HEADERS = 64
MAX_NAME = 100
MAX_VALUE = 1000
# Decisions being carried out: the loop only keeps weak references to its tasks.
_tasks: set[asyncio.Task[Any]] = set()


@dataclass(frozen=True)
class Party:
    """One end of the call as the From/To header names it: the URI, and the number (its user part)."""

    uri: str
    number: str

    @property
    def shown(self) -> str:
        return (self.number or self.uri)[:255]


def clean_headers(raw: Any) -> list[dict[str, str]]:
    """The webhook's `sip_headers`, in order, as bounded text (anything else is dropped)."""
    headers: list[dict[str, str]] = []
    for item in raw if isinstance(raw, list) else ():
        if isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("value"), str):
            headers.append({"name": item["name"][:MAX_NAME], "value": item["value"][:MAX_VALUE]})
        if len(headers) >= MAX_HEADERS:
            break
    return headers


def header(headers: list[dict[str, str]], name: str) -> str:
    lowered = name.lower()
    return next((h["value"] for h in headers if h["name"].lower() == lowered), "")


def party(value: str) -> Party:
    try:
        uri = Address.parse(value).uri
    except ValueError:
        return Party(uri=value.strip()[:255], number="")
    user, host = uri.user or "", uri.host
    text = f"{uri.scheme}:{user}@{host}" if user and host else f"{uri.scheme}:{user or host}"
    return Party(uri=text[:255], number=user[:255])


def _matches(pattern: str, *values: str) -> bool:
    if not pattern:
        return True
    return any(fnmatch.fnmatchcase(value.lower(), pattern.lower()) for value in values if value)


def route_for(*, caller: Party, called: Party, headers: list[dict[str, str]]) -> SipRoute | None:
    """The first enabled route, by position, whose patterns all match."""
    for route in SipRoute.objects.filter(enabled=True).order_by("position", "id"):
        if not _matches(route.called_pattern, called.number, called.uri):
            continue
        if not _matches(route.caller_pattern, caller.number, caller.uri):
            continue
        if route.header_name and not _matches(route.header_pattern or "*", header(headers, route.header_name)):
            continue
        return route
    return None


def decide(*, caller: Party, called: Party, headers: list[dict[str, str]]) -> services.SipDecision:
    route = route_for(caller=caller, called=called, headers=headers)
    if route is None:
        return services.SipDecision(
            accept=False, session=parse_session({}), status=settings.REALTIME_SIP_NO_ROUTE_STATUS, reason="no_route"
        )
    if route.action == SipRoute.Action.REJECT:
        return services.SipDecision(accept=False, session=parse_session({}), status=route.reject_status, route=route)
    try:
        session = parse_session(route.session)
    except InvalidInput:
        # Validated when saved; a route saved before a stricter rule must not take calls down.
        logger.exception("SIP route %s has an invalid session; rejecting the call", route.pk)
        return services.SipDecision(accept=False, session=parse_session({}), status=500, route=route, reason="invalid_route_session")
    return services.SipDecision(accept=True, session=session, route=route)


def _receive(*, webhook: upstream.Webhook) -> tuple[Call, services.SipDecision] | None:
    upstream_id = str(webhook.data.get("call_id", ""))[:100]
    headers = clean_headers(webhook.data.get("sip_headers"))
    caller, called = party(header(headers, "From")), party(header(headers, "To"))
    decision = decide(caller=caller, called=called, headers=headers)
    call = services.sip_call_receive(
        webhook_id=webhook.webhook_id,
        upstream_id=upstream_id,
        caller=caller.shown,
        called=called.shown,
        headers=headers,
        decision=decision,
    )
    return None if call is None else (call, decision)


async def handle_webhook(*, body: bytes, headers: Any) -> str:
    """Verify and handle one webhook; returns what was done ("incoming", "duplicate", "ignored")."""
    webhook = upstream.unwrap_webhook(body=body, headers=headers, secrets=settings.OPENAI_WEBHOOK_SECRETS)
    if webhook.event_type != INCOMING:
        return "ignored"
    if not str(webhook.data.get("call_id", "")):
        raise InvalidInput("data.call_id", _("is required."))
    # On the database thread that call setup uses: its connection stays open (no reconnect, no
    # SQLite checkpoint per webhook) and in-process writers queue there instead of contending for
    # the SQLite write lock, whose busy handler sleeps in growing steps.
    received = await services.in_db_thread(_receive)(webhook=webhook)
    if received is None:
        return "duplicate"
    call, decision = received
    task = asyncio.get_running_loop().create_task(services.sip_call_decide(call=call, decision=decision))
    _tasks.add(task)
    task.add_done_callback(_done)
    return "incoming"


def _done(task: asyncio.Task[Any]) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("Deciding a SIP call failed", exc_info=task.exception())
