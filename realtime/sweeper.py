"""The sweeper: every call ends, with a reason, even when nobody asks.

Each pass (`sweep_once`):
- ends calls past a limit, through the same `services.call_hangup` as the API: `setup_timeout`
  (still pending after REALTIME_SETUP_TIMEOUT_SECONDS: upstream never answered, or the process
  that was creating it died), `max_duration` (the call's own `max_duration_seconds`),
  `idle_timeout` (no speech from either side for REALTIME_IDLE_TIMEOUT_SECONDS);
- retries upstream hangups that were never confirmed (an error, a timeout, a crash between the
  end and the hangup), with exponential backoff, until OpenAI confirms or says 404;
- forgets Idempotency-Keys past their time to live;
- notes API keys whose expiry has passed (audit record, their sockets closed).

Several sweepers may run at once (web processes, workers): the end itself is the claim (the
conditional UPDATE in `services.call_end` lets one sweeper win; the others get
CallStateConflict and move on), and a hangup retry is claimed by moving `hangup_retry_at` on
conditionally, so two sweepers never retry the same hangup at once.

It runs where the monitors run (settings.REALTIME_MONITORS), through `realtime.background.run`:
on the web server's event loop (`manage.py serve`), or in `manage.py realtime_worker`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.db.models import QuerySet
from django.utils import timezone

from . import health, idempotency, services
from .exceptions import CallStateConflict
from .models import Call, CallEvent, Heartbeat, WebhookDelivery

logger = logging.getLogger(__name__)

# A fresh end is being hung up by whoever ended it; the sweeper leaves it alone this long (and
# at least as long as that hangup may take: OPENAI_TIMEOUT).
HANGUP_GRACE_SECONDS = 10.0
# A claimed hangup retry is not claimed again for this long, even if its sweeper died mid-way.
HANGUP_CLAIM_SECONDS = 30.0


@dataclass
class SweepResult:
    ended: dict[str, int] = field(default_factory=dict)
    # The pass found a full batch of calls past a limit: more may be due.
    full: bool = False
    hangups_retried: int = 0
    keys_forgotten: int = 0
    api_keys_expired: int = 0


# Calls ended per pass, all reasons together: a pass reads at most this many, oldest due first,
# and the rest wait for the next pass, which then starts at once (a pass's cost is what it ends,
# never what is live or past). One batch for all reasons, not one per reason: building the calls
# (and the ORM's four queries) is most of a pass's read. At 1M calls with 10,000 overdue, reading
# 100 per reason took 6.7 ms (SQLite) and 9.6 ms (PostgreSQL); one shared batch of 100, 3.4 and
# 4.7 ms; of 50, 2.2 and 3.1 ms; of 25, 1.6 and 2.4 ms (3.6 ms on PostgreSQL where the batch is
# idle calls, 4.4 ms with 50). Passes follow each other at once while batches are full, so the
# pace of ending stays the same.
SWEEP_BATCH = 25
# What the sweeper reads of a call to end it (never its documents).
_SWEPT = ("pk", "call_id", "upstream_id", "status", "created_at", "answered_at", "last_activity_at", "max_duration_seconds")


def due_calls(*, now: datetime, limit: int = SWEEP_BATCH) -> list[tuple[Call, Call.EndReason, dict[str, int]]]:
    """Live calls past a limit, each with the reason to end it and the limit it passed.

    Each reason is one range of an index that starts with the status, read from the oldest due:
    pending calls by creation (call_status_recent_idx), active calls by their own deadline
    (call_deadline_idx, set when the call was answered) and by last speech, else answer
    (call_idle_idx). The settings' limits apply as they are now; a call's own maximum duration
    was fixed when it was answered.
    """
    due: list[tuple[Call, Call.EndReason, dict[str, int]]] = []
    live = Call.objects.only(*_SWEPT).order_by()
    setup = settings.REALTIME_SETUP_TIMEOUT_SECONDS
    pending = live.filter(status=Call.Status.PENDING, created_at__lt=now - timedelta(seconds=setup)).order_by("created_at")
    due.extend((call, Call.EndReason.SETUP_TIMEOUT, {"limit_seconds": setup}) for call in pending[:limit])
    active = live.filter(status=Call.Status.ACTIVE)
    if len(due) < limit:
        for call in active.filter(deadline_at__lte=now).order_by("deadline_at")[: limit - len(due)]:
            limit_seconds = call.max_duration_seconds or settings.REALTIME_MAX_DURATION_SECONDS
            due.append((call, Call.EndReason.MAX_DURATION, {"limit_seconds": limit_seconds}))
    idle = settings.REALTIME_IDLE_TIMEOUT_SECONDS
    if idle and len(due) < limit:
        since = now - timedelta(seconds=idle)
        # A call past both limits ends at its maximum duration (the first reason found).
        seen = {call.pk for call, _reason, _data in due}
        spoke = active.filter(last_activity_at__lte=since).order_by("last_activity_at")
        silent = active.filter(last_activity_at__isnull=True, answered_at__lte=since).order_by("answered_at")
        for query in (spoke, silent):
            if len(due) >= limit:
                break
            # Read past the calls already due at their deadline, which may be idle too.
            for call in query[: limit - len(due) + len(seen)]:
                if len(due) < limit and call.pk not in seen:
                    due.append((call, Call.EndReason.IDLE_TIMEOUT, {"limit_seconds": idle}))
    return due


def _grace() -> float:
    return max(HANGUP_GRACE_SECONDS, settings.OPENAI_TIMEOUT + 5)


def due_hangups(*, now: datetime) -> QuerySet[Call]:
    """Ended calls whose upstream hangup is unconfirmed and due (again)."""
    return services.hangup_retry_due(now=now, grace_seconds=_grace())


def claim_hangup_retries(*, now: datetime, limit: int = 50) -> list[Call]:
    """Ended calls whose upstream hangup is unconfirmed and due again, claimed for this sweeper."""
    return services.hangup_retry_claim(now=now, grace_seconds=_grace(), claim_seconds=HANGUP_CLAIM_SECONDS, limit=limit)


# OpenAI retries a webhook for up to 72 hours: a delivery older than that cannot come back.
WEBHOOK_RETRY_WINDOW = timedelta(hours=72)


def forget_webhook_deliveries(*, now: datetime) -> int:
    deleted, _ = WebhookDelivery.objects.filter(received_at__lt=now - WEBHOOK_RETRY_WINDOW).delete()
    return deleted


async def sweep_once() -> SweepResult:
    result = SweepResult()
    now = timezone.now()
    due = await sync_to_async(due_calls)(now=now, limit=SWEEP_BATCH)
    result.full = len(due) >= SWEEP_BATCH
    for call, reason, data in due:
        try:
            await services.call_hangup(call=call, reason=reason, actor=CallEvent.Actor.SYSTEM, data=data)
        except CallStateConflict:
            continue  # ended meanwhile (API, admin, monitor, another sweeper): that end stands
        result.ended[reason] = result.ended.get(reason, 0) + 1
        logger.info("Ended %s: %s", call.call_id, reason)
    for call in await sync_to_async(claim_hangup_retries)(now=now):
        await services.hangup_upstream(call=call)
        result.hangups_retried += 1
    result.keys_forgotten = await sync_to_async(idempotency.forget_expired)(now=now)
    await sync_to_async(forget_webhook_deliveries)(now=now)
    await sync_to_async(health.forget_old_beats)(now=now)
    # Said after the pass, so a sweeper that keeps failing half-way shows as stopped.
    await sync_to_async(health.beat)(Heartbeat.Role.SWEEPER)
    result.api_keys_expired = await sync_to_async(services.api_keys_expire)(now=now)
    return result


async def run(stop: asyncio.Event) -> None:
    """Sweep every REALTIME_SWEEP_INTERVAL_SECONDS until `stop` is set."""
    logger.info("Call sweeper started")
    while not stop.is_set():
        try:
            result = await sweep_once()
        except Exception:
            # A database hiccup must not stop the sweeping; the next pass retries.
            logger.exception("Sweep failed")
            await sync_to_async(close_old_connections)()
            result = SweepResult()
        if result.full:
            await asyncio.sleep(0)  # more is due: the next pass starts now, after others had a turn
            continue
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.REALTIME_SWEEP_INTERVAL_SECONDS)
        except TimeoutError:
            pass
