"""The retention purge: each kind of a call's personal data goes once its period has run out.

Periods are settings (REALTIME_RETENTION_DAYS, per kind, counted from the call's end; None keeps
forever; docs/privacy.md). A pass (`purge_batch`, repeated by `purge_all`) finds ended calls due
for each kind, oldest first, from one partial index per kind (`call_purge_<kind>_idx`: only calls
not purged yet, so a pass reads what is due and nothing else), and purges the batch in one short
transaction through `services.calls_purge_data`; calls past REALTIME_RETAIN_CALLS_DAYS are
then deleted whole (`services.calls_delete_expired`).

It runs in the background where the sweeper runs (`realtime.background.run`, every
REALTIME_PURGE_INTERVAL_SECONDS), and from `manage.py purge_call_data` (with `--dry-run`). Several
purges may run at once: each kind of each call is claimed by a conditional UPDATE, so it is
purged once whoever gets there first. Live calls are never touched (only calls with an end), and
never wait long behind the purge: batches are small, one short transaction each, and the
background loop rests after each batch in proportion to it, so that it works at most
REALTIME_PURGE_SHARE of the time (bench/purge.py measures live requests meanwhile).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.db.models import QuerySet
from django.utils import timezone

from . import services
from .models import Call

logger = logging.getLogger(__name__)

# The purge's database work runs on a thread of its own, never on the thread that the monitors'
# and the sweeper's database work shares (asgiref's thread-sensitive one): a batch must not hold
# up a live call's events.
_purge_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="realtime-purge")


@dataclass
class PurgeResult:
    # Calls purged per kind ("calls": deleted whole).
    purged: dict[str, int] = field(default_factory=dict)

    def add(self, other: PurgeResult) -> None:
        for kind, n in other.purged.items():
            self.purged[kind] = self.purged.get(kind, 0) + n

    @property
    def total(self) -> int:
        return sum(self.purged.values())


def cutoff(kind: str, *, now: datetime) -> datetime | None:
    """Calls ended before this have their data of `kind` purged; None: kept forever."""
    days = settings.REALTIME_RETENTION_DAYS.get(kind)
    return None if days is None else now - timedelta(days=days)


def due(kind: str, *, now: datetime) -> QuerySet[Call] | None:
    """Query for the calls due for `kind`, oldest end first (None: this kind is kept forever).

    Spelled for the kind's partial index: its condition's terms, then the range on ended_at
    (whole calls: the range on created_at).
    """
    before = cutoff(kind, now=now)
    if before is None:
        return None
    calls = Call.objects.filter(ended_at__isnull=False, ended_at__lt=before)
    if kind == "calls":
        # A call ended before the cutoff was created before it: whole calls come from the index
        # of creation (call_recent_idx), oldest first, rather than from an index of their ends
        # that every transition of an ended call would write, on PostgreSQL, for this alone.
        return calls.filter(created_at__lt=before).order_by("created_at", "id")
    return calls.filter(**{f"{kind}_purged_at__isnull": True}).order_by("ended_at")


def due_counts(*, now: datetime) -> dict[str, int | None]:
    """How many calls each kind would purge now (None: kept forever): the dry run."""
    counts: dict[str, int | None] = {}
    for kind in (*services.PURGE_KINDS, "calls"):
        calls = due(kind, now=now)
        counts[kind] = None if calls is None else calls.count()
    return counts


def purge_batch(*, now: datetime, limit: int) -> PurgeResult:
    """Purge up to `limit` due calls of each kind, in one short transaction."""
    result = PurgeResult()
    kinds_by_call: dict[int, list[str]] = {}
    for kind in services.PURGE_KINDS:
        calls = due(kind, now=now)
        for pk in [] if calls is None else calls.values_list("pk", flat=True)[:limit]:
            kinds_by_call.setdefault(pk, []).append(kind)
    for kinds in services.calls_purge_data(kinds_by_call=kinds_by_call, at=now, data={"by": "retention"}).values():
        for kind in kinds:
            result.purged[kind] = result.purged.get(kind, 0) + 1
    expired = due("calls", now=now)
    before = cutoff("calls", now=now)
    if expired is not None and before is not None:
        for pk in expired.values_list("pk", flat=True)[:limit]:
            if services.calls_delete_expired(pks=[pk], ended_before=before):
                result.purged["calls"] = result.purged.get("calls", 0) + 1
    return result


def purge_all(*, now: datetime | None = None, limit: int | None = None) -> PurgeResult:
    """Purge everything due, batch after batch (the management command)."""
    now = now or timezone.now()
    result = PurgeResult()
    while True:
        batch = purge_batch(now=now, limit=limit or settings.REALTIME_PURGE_BATCH_SIZE)
        result.add(batch)
        if not batch.total:
            return result


def _in_purge_thread(fn: Callable[..., PurgeResult]) -> Callable[..., Awaitable[PurgeResult]]:
    if not settings.REALTIME_DB_THREAD:
        # Tests sharing the test runner's connection and its transaction (see services.in_db_thread).
        return sync_to_async(fn)

    @functools.wraps(fn)
    def fresh(*args: Any, **kwargs: Any) -> PurgeResult:
        close_old_connections()
        return fn(*args, **kwargs)

    return sync_to_async(fresh, thread_sensitive=False, executor=_purge_thread)


async def purge_in_background(stop: asyncio.Event) -> PurgeResult:
    """One pass, batch after batch with a pause between them, until nothing is due or `stop`."""
    now = timezone.now()
    result = PurgeResult()
    while not stop.is_set():
        started = time.monotonic()
        batch = await _in_purge_thread(purge_batch)(now=now, limit=settings.REALTIME_PURGE_BATCH_SIZE)
        result.add(batch)
        if not batch.total:
            break
        # Rest in proportion to the work: the purge takes at most REALTIME_PURGE_SHARE of the time.
        await asyncio.sleep((time.monotonic() - started) * (1 / settings.REALTIME_PURGE_SHARE - 1))
    if result.total:
        logger.info("Purged expired call data: %s", result.purged)
    return result


async def run(stop: asyncio.Event) -> None:
    """Purge every REALTIME_PURGE_INTERVAL_SECONDS until `stop` is set."""
    if all(days is None for days in settings.REALTIME_RETENTION_DAYS.values()):
        return  # everything is kept forever: nothing to do, ever
    while not stop.is_set():
        try:
            await purge_in_background(stop)
        except Exception:
            # A database hiccup must not stop the purging; the next pass retries.
            logger.exception("Purge of expired call data failed")
            await sync_to_async(close_old_connections)()
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.REALTIME_PURGE_INTERVAL_SECONDS)
        except TimeoutError:
            pass
