"""The dispatcher: sends the outbox's due deliveries, signed, and schedules retries.

Runs in every process that runs background work (`realtime.background.run`: the web server's
event loop with `manage.py serve`, or `manage.py realtime_worker`). Several may run at once: each
delivery is claimed by a conditional UPDATE that moves its `next_attempt_at` one lease ahead, so
exactly one dispatcher holds it; if that one dies mid-send, the row is due again when the lease
runs out and another dispatcher sends it (at least once: receivers dedupe on `webhook-id`).

Each attempt: the URL is checked again (guard: the host may resolve elsewhere now) and the
request goes to the checked address; no redirects, no proxies from the environment, one overall
timeout, at most RESPONSE_CAP bytes of the answer read. A 2xx is a delivery; anything else is a
failure, retried with exponential backoff and jitter (or after the receiver's Retry-After) until
the retry window (72 h) closes; the row is then marked failed and kept. An endpoint that keeps
failing (REALTIME_WEBHOOK_DISABLE_AFTER_*) is disabled; its pending rows wait for it to be
enabled again, or for their window to close.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import socket
import ssl
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

import certifi
import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone
from standardwebhooks import Webhook

from . import guard
from .models import WebhookEndpoint, WebhookMessage

logger = logging.getLogger(__name__)

# Bytes of a receiver's answer we read (for the log): enough for an error message, never more.
RESPONSE_CAP = 4096
USER_AGENT = "IAPosteManager-Webhooks/1.0"

# Running dispatchers, to wake when a transaction wrote deliveries (see `wake`).
_running: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()


def wake() -> None:
    """Tell this process's dispatchers that deliveries are due (after the commit that wrote them):
    the first attempt leaves at once instead of at the next poll. Safe from any thread."""
    for loop, event in list(_running):
        if not loop.is_closed():
            loop.call_soon_threadsafe(event.set)


# --- database side (sync) --------------------------------------------------------------------


def claim(*, now: datetime, limit: int, busy: dict[int, int] | None = None) -> list[WebhookMessage]:
    """Claim up to `limit` due deliveries for this dispatcher, at most REALTIME_WEBHOOK_ENDPOINT_CONCURRENCY
    per endpoint counting the `busy` ones it is already sending.

    Each claim is a conditional UPDATE on the `next_attempt_at` the SELECT saw: if another
    dispatcher claimed the row since, it changes nothing and the row is not ours.
    """
    if limit <= 0:
        return []
    per_endpoint = settings.REALTIME_WEBHOOK_ENDPOINT_CONCURRENCY
    taken = defaultdict(int, busy or {})
    due = WebhookMessage.objects.filter(status=WebhookMessage.Status.PENDING, next_attempt_at__lte=now)
    # Several times `limit`, so one busy endpoint does not hide the others' deliveries.
    candidates = list(due.order_by("next_attempt_at").values_list("pk", "next_attempt_at", "endpoint_id")[: limit * 4])
    lease_until = now + timedelta(seconds=settings.REALTIME_WEBHOOK_LEASE_SECONDS)
    won: list[int] = []
    for pk, seen, endpoint_id in candidates:
        if len(won) >= limit:
            break
        if per_endpoint and taken[endpoint_id] >= per_endpoint:
            continue
        if WebhookMessage.objects.filter(pk=pk, status=WebhookMessage.Status.PENDING, next_attempt_at=seen).update(
            next_attempt_at=lease_until
        ):
            won.append(pk)
            taken[endpoint_id] += 1
    if not won:
        return []
    return list(WebhookMessage.objects.filter(pk__in=won).select_related("endpoint").order_by("next_attempt_at", "id"))


def backoff(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: doubling from
    REALTIME_WEBHOOK_RETRY_SECONDS up to the cap, each delay between half and all of it ("equal
    jitter"), so endpoints that failed together are not retried together."""
    delay = min(settings.REALTIME_WEBHOOK_RETRY_SECONDS * 2 ** max(attempts - 1, 0), settings.REALTIME_WEBHOOK_RETRY_MAX_SECONDS)
    return delay / 2 + random.uniform(0, delay / 2)


@dataclass(frozen=True)
class Outcome:
    """What one attempt gave."""

    ok: bool
    status: int | None = None
    latency_ms: int | None = None
    error: str = ""
    retry_after: float | None = None


def record(*, message: WebhookMessage, outcome: Outcome, now: datetime) -> WebhookMessage.Status | None:
    """Store an attempt's outcome and schedule the next one; returns the row's new status, or
    None if this dispatcher no longer held it (its lease ran out and another claimed it)."""
    attempts = message.attempts + 1
    changes: dict[str, object] = {
        "attempts": attempts,
        "last_attempt_at": now,
        "response_status": outcome.status,
        "latency_ms": outcome.latency_ms,
        "error": outcome.error[:500],
    }
    if outcome.ok:
        status = WebhookMessage.Status.DELIVERED
        changes.update(status=status, delivered_at=now, next_attempt_at=None)
    else:
        delay = backoff(attempts) if outcome.retry_after is None else outcome.retry_after
        retry_at = now + timedelta(seconds=delay)
        if retry_at > message.give_up_at:
            # The window is over: kept as failed (the log shows it; "send again" still works).
            status = WebhookMessage.Status.FAILED
            changes.update(status=status, next_attempt_at=None)
        else:
            status = WebhookMessage.Status.PENDING
            changes.update(next_attempt_at=retry_at)
    with transaction.atomic():
        held = WebhookMessage.objects.filter(pk=message.pk, status=WebhookMessage.Status.PENDING, next_attempt_at=message.next_attempt_at)
        if not held.update(**changes):
            return None
        for name, value in changes.items():
            setattr(message, name, value)
        if outcome.ok:
            WebhookEndpoint.objects.filter(pk=message.endpoint_id, failure_streak__gt=0).update(failure_streak=0, failing_since=None)
        else:
            _note_failure(endpoint_id=message.endpoint_id, now=now)
    return status


def record_many(*, outcomes: list[tuple[WebhookMessage, Outcome]], now: datetime) -> list[WebhookMessage.Status | None]:
    """`record` for several attempts in one transaction: one commit for all that finished together."""
    with transaction.atomic():
        return [record(message=message, outcome=outcome, now=now) for message, outcome in outcomes]


def _note_failure(*, endpoint_id: int, now: datetime) -> None:
    """Count a failed attempt; disable an endpoint that has failed for long enough (conditionally, once)."""
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(
        failure_streak=F("failure_streak") + 1, failing_since=Coalesce(F("failing_since"), now)
    )
    streak, since = WebhookEndpoint.objects.values_list("failure_streak", "failing_since").get(pk=endpoint_id)
    hours = settings.REALTIME_WEBHOOK_DISABLE_AFTER_HOURS
    if streak >= settings.REALTIME_WEBHOOK_DISABLE_AFTER_FAILURES and since is not None and now - since >= timedelta(hours=hours):
        reason = f"{streak} failed attempts in a row since {since:%Y-%m-%d %H:%M} UTC"
        if WebhookEndpoint.objects.filter(pk=endpoint_id, enabled=True).update(enabled=False, disabled_at=now, disabled_reason=reason):
            logger.warning("Webhook endpoint %s disabled: %s", endpoint_id, reason)


def park(*, message: WebhookMessage, now: datetime) -> None:
    """A delivery claimed for a disabled endpoint waits for it (enabling it makes the row due
    again) until its window closes; then it is marked failed, and kept."""
    held = WebhookMessage.objects.filter(pk=message.pk, status=WebhookMessage.Status.PENDING, next_attempt_at=message.next_attempt_at)
    if message.give_up_at <= now:
        held.update(status=WebhookMessage.Status.FAILED, next_attempt_at=None, error="endpoint disabled")
    else:
        held.update(next_attempt_at=message.give_up_at)


# --- network side (async) ----------------------------------------------------------------------


def tls() -> ssl.SSLContext:
    """httpx's default trust (certifi's public CAs), and REALTIME_WEBHOOK_CA_FILE's CAs besides."""
    context = ssl.create_default_context(cafile=certifi.where())
    if settings.REALTIME_WEBHOOK_CA_FILE:
        context.load_verify_locations(cafile=settings.REALTIME_WEBHOOK_CA_FILE)
    return context


def client() -> httpx.AsyncClient:
    # trust_env=False: a proxy from the environment would connect to a host we did not check.
    timeout = settings.REALTIME_WEBHOOK_TIMEOUT_SECONDS
    return httpx.AsyncClient(
        follow_redirects=False, trust_env=False, verify=tls(), timeout=httpx.Timeout(timeout), headers={"User-Agent": USER_AGENT}
    )


def body_of(message: WebhookMessage) -> str:
    return json.dumps(message.payload, separators=(",", ":"), ensure_ascii=False)


def sign(*, message: WebhookMessage, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers; during a secret rotation, one signature per valid secret
    (space-separated), so receivers verify with either."""
    signatures = " ".join(Webhook(secret).sign(message.message_id, at, body) for secret in message.endpoint.signing_secrets(now=at))
    return {
        "webhook-id": message.message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }


def retry_after(value: str | None, *, now: datetime) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds, within the retry cap's reach."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value) if value.isdigit() else (parsedate_to_datetime(value) - now).total_seconds()
    except (TypeError, ValueError, OverflowError):
        return None
    return min(max(seconds, 0.0), settings.REALTIME_WEBHOOK_RETRY_HOURS * 3600)


async def attempt(message: WebhookMessage, http: httpx.AsyncClient) -> Outcome:
    """One signed POST of the delivery to its endpoint."""
    try:
        target = await guard.acheck(message.endpoint.url)
    except guard.Refused as exc:
        return Outcome(ok=False, error=f"refused: {exc}")
    body = body_of(message)
    now = timezone.now()
    headers = {**sign(message=message, body=body, at=now), "host": target.host_header()}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.REALTIME_WEBHOOK_TIMEOUT_SECONDS):
            request = http.build_request("POST", target.connect_url(), content=body.encode(), headers=headers)
            # TLS is checked against the endpoint's host name, not the address we connect to.
            request.extensions["sni_hostname"] = target.host
            response = await http.send(request, stream=True)
            try:
                received = 0
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if received >= RESPONSE_CAP:
                        break
            finally:
                await response.aclose()
    except TimeoutError:
        return Outcome(ok=False, latency_ms=_ms(started), error="timed out")
    except httpx.HTTPError as exc:
        return Outcome(ok=False, latency_ms=_ms(started), error=f"{type(exc).__name__}: {exc}"[:500])
    latency = _ms(started)
    if 200 <= response.status_code < 300:
        return Outcome(ok=True, status=response.status_code, latency_ms=latency)
    return Outcome(
        ok=False,
        status=response.status_code,
        latency_ms=latency,
        error=f"HTTP {response.status_code}",
        retry_after=retry_after(response.headers.get("retry-after"), now=timezone.now()),
    )


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


class Recorder:
    """Stores outcomes as attempts finish, those finishing together in one transaction (a group
    commit): each commit costs a disk flush, and one per delivery would cap the rate at the disk's."""

    def __init__(self) -> None:
        self.queue: list[tuple[WebhookMessage, Outcome, asyncio.Future[WebhookMessage.Status | None]]] = []
        self.flushing: asyncio.Task[None] | None = None

    async def store(self, message: WebhookMessage, outcome: Outcome) -> WebhookMessage.Status | None:
        done: asyncio.Future[WebhookMessage.Status | None] = asyncio.get_running_loop().create_future()
        self.queue.append((message, outcome, done))
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        # What arrives during a flush goes into the next one.
        while self.queue:
            batch, self.queue = self.queue, []
            try:
                statuses = await sync_to_async(record_many)(outcomes=[(m, o) for m, o, _ in batch], now=timezone.now())
            except Exception as exc:
                for _m, _o, done in batch:
                    done.set_exception(exc)
                continue
            for (_m, _o, done), status in zip(batch, statuses, strict=True):
                done.set_result(status)


async def deliver(message: WebhookMessage, http: httpx.AsyncClient, recorder: Recorder) -> WebhookMessage.Status | None:
    """Send one claimed delivery and store the outcome."""
    if not message.endpoint.enabled:
        await sync_to_async(park)(message=message, now=timezone.now())
        return None
    outcome = await attempt(message, http)
    status = await recorder.store(message, outcome)
    if status is not None and not outcome.ok:
        logger.info("Webhook %s to endpoint %s failed (%s): %s", message.message_id, message.endpoint_id, outcome.error, status)
    return status


class Dispatcher:
    """Claims and sends deliveries; `run` until stopped, or `dispatch_once` (tests, benchmarks)."""

    def __init__(self) -> None:
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.busy: dict[int, int] = defaultdict(int)
        self.tasks: set[asyncio.Task[None]] = set()
        self.recorder = Recorder()
        # Set when deliveries may be claimed: new ones written in this process, or a place freed.
        self.woken = asyncio.Event()

    async def _send(self, message: WebhookMessage, http: httpx.AsyncClient) -> None:
        try:
            await deliver(message, http, self.recorder)
        except Exception:
            # The row stays claimed until its lease runs out, then it is due again.
            logger.exception("Webhook %s could not be sent", message.message_id)
        finally:
            self.busy[message.endpoint_id] -= 1
            # A place is free: claim again now rather than at the next poll (a backlog drains at
            # the endpoints' pace, not one batch per poll interval).
            self.woken.set()

    async def claim_and_start(self, http: httpx.AsyncClient) -> int:
        free = settings.REALTIME_WEBHOOK_BATCH - len(self.tasks)
        busy = {k: v for k, v in self.busy.items() if v > 0}
        claimed = await sync_to_async(claim)(now=timezone.now(), limit=free, busy=busy)
        for message in claimed:
            self.busy[message.endpoint_id] += 1
            task = asyncio.create_task(self._send(message, http))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return len(claimed)

    async def dispatch_once(self, http: httpx.AsyncClient) -> int:
        """Claim what is due now, send it, and wait for the outcomes; returns how many were sent."""
        started = await self.claim_and_start(http)
        if self.tasks:
            await asyncio.gather(*self.tasks)
        return started

    async def run(self, stop: asyncio.Event) -> None:
        logger.info("Webhook dispatcher started (%s)", self.owner)
        woken = self.woken
        entry = (asyncio.get_running_loop(), woken)
        _running.add(entry)
        try:
            async with client() as http:
                while not stop.is_set():
                    woken.clear()
                    try:
                        await self.claim_and_start(http)
                    except Exception:
                        # A database hiccup must not stop the dispatching; the next pass retries.
                        logger.exception("Webhook dispatch failed")
                        await sync_to_async(close_old_connections)()
                    await _first(stop, woken, seconds=settings.REALTIME_WEBHOOK_POLL_SECONDS)
                if self.tasks:
                    # Attempts under way finish (each is bounded by the timeout); none is cut mid-send.
                    await asyncio.wait(self.tasks, timeout=settings.REALTIME_WEBHOOK_TIMEOUT_SECONDS + 1)
        finally:
            _running.discard(entry)


async def _first(*events: asyncio.Event, seconds: float) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def run(stop: asyncio.Event) -> None:
    """Dispatch until `stop` is set (see the module docstring)."""
    await Dispatcher().run(stop)
