"""Sideband monitors: one per active call, recording what happens upstream and noticing the end.

A `CallMonitor` joins a call's sideband WebSocket (through `upstream.connect_sideband`), folds
high-rate deltas into the events that close them, and stores events in batches through
`services.call_record_events`, with the call's quality figures (`quality.TurnMeter`, measured on
every event as it arrives, before deltas are folded) whenever a batch changed them. When the socket closes while the call is still active here, it
reconnects: OpenAI answering 404 means the call ended upstream (the caller left, the model or the
60-minute cap ended it), so the call is ended as `remote_hangup`, or as `lost` if nobody saw it
end: this monitor never joined its sideband, and it took the call over from a dead process, or
the call was answered before this process started watching (its answering process died first); a fatal close, or a sideband
that stays unreachable, ends it as `upstream_error`. Both go through `services.call_end`, which
records `call.ended` exactly once whoever gets there first.

A `Supervisor` decides which calls this process watches: it claims active calls through a
lease in the database (`services.monitor_claim`) every REALTIME_MONITOR_CLAIM_SECONDS, renews its
leases every third of their length, and stops a monitor whose lease it lost. A process that dies stops renewing, and another
supervisor claims its calls once the leases run out.

Where supervisors run (settings.REALTIME_MONITORS), always through `realtime.background.run`:
- "embedded": in the web server process, on the server's own event loop (`manage.py serve`);
- "worker": in `manage.py realtime_worker` processes, as many as needed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from . import health, quality, services, upstream
from .exceptions import CallStateConflict, UpstreamError
from .models import Call, CallEvent, Heartbeat

logger = logging.getLogger(__name__)

# Stored inside the event that completes them (as a count), never one row each.
FOLDED_SUFFIX = ".delta"
# Announcements whose content the closing event repeats in full (`conversation.item.done`,
# `response.done`): storing them would double the rows and add nothing.
SKIPPED = frozenset(
    {
        "conversation.item.added",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
    }
)

# Stored measured events read back per query when a monitor takes a call (`_resume_meter`).
RESUME_PAGE = 1000


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class EventBuffer:
    """Events waiting to be stored, with deltas folded into the `.done` event they lead to."""

    def __init__(self) -> None:
        self.events: list[services.UpstreamEvent] = []
        self._deltas: dict[tuple[str, str, Any], int] = {}

    def add(self, event: dict[str, Any], received_at: datetime | None = None) -> None:
        kind = event["type"]
        if kind in SKIPPED:
            return
        key = (kind.removesuffix(FOLDED_SUFFIX).removesuffix(".done"), str(event.get("item_id", "")), event.get("content_index"))
        if kind.endswith(FOLDED_SUFFIX):
            self._deltas[key] = self._deltas.get(key, 0) + 1
            return
        data = {k: v for k, v in event.items() if k not in ("type", "event_id")}
        if kind.endswith(".done") and key in self._deltas:
            data["deltas"] = self._deltas.pop(key)
        elif kind == "conversation.item.input_audio_transcription.completed":
            key = ("conversation.item.input_audio_transcription", str(event.get("item_id", "")), event.get("content_index"))
            if key in self._deltas:
                data["deltas"] = self._deltas.pop(key)
        self.events.append(services.UpstreamEvent(kind, str(event.get("event_id") or ""), data, received_at or timezone.now()))

    def take(self) -> list[services.UpstreamEvent]:
        events, self.events = self.events, []
        return events


class CallMonitor:
    def __init__(
        self, call: Call, *, recovered_from: str = "", watching_since: datetime | None = None, watched_before: bool = True
    ) -> None:
        self.call = call
        # The monitor that held the call before its process died; "" for a call watched afresh.
        self.recovered_from = recovered_from
        # False for a call no monitor ever held (`services.Claimed`): nothing stored to read back.
        self.watched_before = watched_before
        # When this process started watching calls: a call answered before then, that no monitor
        # ever held, was answered by a process that died before any monitor took it.
        self.watching_since = watching_since
        self.buffer = EventBuffer()
        self.meter = quality.TurnMeter()
        self.recorded = 0
        # When the call ended, once a read of its state has seen it ended (`_still_live`).
        self.ended_at: datetime | None = None
        # Batches are stored in order, one at a time: a flush waits for the one before it.
        self._flush_lock = asyncio.Lock()
        self._pending: asyncio.Future[None] | None = None

    async def flush(self, *, until: datetime | None = None) -> None:
        """Store the events received since the last flush, with the figures if they changed, or
        with them counted up to `until` (the call's end: talk and silence still running)."""
        async with self._flush_lock:
            events = self.buffer.take()
            metrics = self.meter.take_changes() if until is None else self.meter.metrics(until=until)
            if events or metrics is not None:
                self.recorded += await sync_to_async(services.call_record_events)(call=self.call, events=events, metrics=metrics)

    def _resume_meter(self) -> None:
        """Measure again what earlier monitors of the call stored (arrival times kept as
        `created_at`), so the figures cover the whole call, not only what this monitor sees.

        Read in pages by id rather than with `.iterator()`: on PostgreSQL that is a server-side
        cursor (DECLARE, FETCH, CLOSE in a transaction of its own), four round trips for every
        call a monitor takes, nearly all of which have nothing stored yet."""
        stored = CallEvent.objects.filter(call_id=self.call.pk, event_type__in=quality.MEASURED).order_by("id")
        after = 0
        while True:
            page = list(stored.filter(id__gt=after).values_list("id", "event_type", "data", "created_at")[:RESUME_PAGE])
            for _, event_type, data, created_at in page:
                self.meter.add(event_type, data, created_at)
            if len(page) < RESUME_PAGE:
                return
            after = page[-1][0]

    async def _final_metrics(self) -> None:
        """The last flush: what is left, and once the call ended, its figures with talk and silence
        still running counted up to its end, in the same transaction (a call's last batch and its
        final figures were two transactions, and a read of its end a third round trip)."""
        until = None
        if self.meter.first_at is not None:  # nothing measured: no figure to extend, and no read
            ended = self.ended_at
            if ended is None:
                ended = await sync_to_async(
                    Call.objects.filter(pk=self.call.pk, status=Call.Status.ENDED).values_list("ended_at", flat=True).first
                )()
            if ended is not None:
                until = max(ended, self.meter.last_at or ended)
        await self.flush(until=until)

    async def _flush_soon(self) -> None:
        """Store a full batch while reading on; wait only if the database falls a batch behind."""
        if self._pending is not None:
            if not self._pending.done() and len(self.buffer.events) < 2 * settings.REALTIME_MONITOR_BATCH_SIZE:
                return
            # Backpressure (the socket buffers, not our memory), and a failed store fails the monitor.
            await self._pending
        self._pending = asyncio.ensure_future(self.flush())

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(settings.REALTIME_MONITOR_FLUSH_MS / 1000)
            await self.flush()

    async def _still_live(self) -> bool:
        """Whether the call is active; if it has ended, when (kept for the final figures)."""
        status, ended = await sync_to_async(Call.objects.filter(pk=self.call.pk).values_list("status", "ended_at").first)() or (None, None)
        if status == Call.Status.ENDED:
            self.ended_at = ended
        return status == Call.Status.ACTIVE

    async def _end(self, *, reason: Call.EndReason, data: dict[str, Any]) -> None:
        try:
            ended = await sync_to_async(services.call_end)(call=self.call, reason=reason, actor=CallEvent.Actor.UPSTREAM, data=data)
        except CallStateConflict:
            return  # ended meanwhile (API, admin, another monitor): that end stands, once
        self.ended_at = ended.ended_at
        if reason in (Call.EndReason.REMOTE_HANGUP, Call.EndReason.LOST):
            await sync_to_async(services.call_note_upstream_closed)(call=self.call, hung_up=False)
        else:
            # The sideband failed, not necessarily the media: make sure nothing keeps running (and billing).
            await services.hangup_upstream(call=self.call)

    def _answered_before_watching(self) -> bool:
        answered = self.call.answered_at
        return self.watching_since is not None and answered is not None and answered < self.watching_since

    @staticmethod
    def _quick(opened: float | None) -> bool:
        """True if the connection never opened, or closed within a second of opening."""
        return opened is None or asyncio.get_running_loop().time() - opened < 1.0

    async def run(self) -> None:
        """Watch the call until it ends (here or upstream). Cancelling stops it after a last flush."""
        # A call watched before (by a process that died or shut down) keeps its figures. A new
        # call has none: its read was about 7 % of a worker's CPU in a churn of short calls.
        if self.watched_before:
            await sync_to_async(self._resume_meter)()
        flusher = asyncio.ensure_future(self._flush_periodically())
        failures = 0
        connected = False  # whether this monitor ever joined the sideband
        try:
            while True:
                opened: float | None = None  # when this connection opened (None: it did not)
                try:
                    async with upstream.connect_sideband(upstream_id=self.call.upstream_id) as sideband:
                        opened = asyncio.get_running_loop().time()
                        if not connected and self.recovered_from:
                            logger.warning("Re-attached %s to its sideband", self.call.call_id)
                        connected = True
                        async for event in sideband.events():
                            # One arrival time for the meter and the stored event (quality.py says why).
                            received_at = timezone.now()
                            self.meter.add(event["type"], event, received_at)
                            self.buffer.add(event, received_at)
                            if len(self.buffer.events) >= settings.REALTIME_MONITOR_BATCH_SIZE:
                                await self._flush_soon()
                    # A clean close right after opening, again and again, is a failure too: no
                    # busy loop of reconnections against an upstream that accepts then hangs up.
                    failures = failures + 1 if self._quick(opened) else 0
                except upstream.SidebandGone:
                    await self.flush()
                    if not connected and (self.recovered_from or self._answered_before_watching()):
                        # Gone while nobody watched: its monitor's process died, or the process
                        # that answered it died before any monitor took it (no previous monitor
                        # then, but no hangup seen either). When it ended and why is unknown, so
                        # it is `lost`, not a hangup we saw. (A call that ends before its first
                        # monitor joins, with every process alive, is a hangup: the caller left.)
                        data = {"upstream": "call_gone", "previous_monitor": self.recovered_from or None}
                        await self._end(reason=Call.EndReason.LOST, data=data)
                    else:
                        await self._end(reason=Call.EndReason.REMOTE_HANGUP, data={"upstream": "call_gone"})
                    return
                except upstream.SidebandFatal as exc:
                    await self.flush()
                    await self._end(reason=Call.EndReason.UPSTREAM_ERROR, data={"code": exc.code, "message": exc.message, **exc.details})
                    return
                except UpstreamError as exc:
                    # A socket that dropped after working a while starts a fresh count.
                    failures = failures + 1 if self._quick(opened) else 1
                    logger.info("Sideband of %s lost (%s), attempt %d", self.call.call_id, exc.code, failures)
                    if failures >= settings.REALTIME_MONITOR_RECONNECT_ATTEMPTS:
                        await self.flush()
                        if await self._still_live():
                            await self._end(
                                reason=Call.EndReason.UPSTREAM_ERROR, data={"code": exc.code, "message": exc.message, **exc.details}
                            )
                        return
                # Closed (cleanly or not) while the call is active here: reconnect, and let
                # OpenAI say whether the call still exists. Ended here: nothing left to watch
                # (what was received is stored with the final figures, below).
                if not await self._still_live():
                    return
                await self.flush()
                if failures:
                    await asyncio.sleep(min(0.25 * 2**failures, 5.0))
        finally:
            flusher.cancel()
            try:
                # A batch being stored goes first: the final figures must not be overwritten.
                if self._pending is not None:
                    await self._pending
            finally:
                # Whatever arrived before a cancellation is stored: nobody else received it.
                await asyncio.shield(self._final_metrics())


class Supervisor:
    """Claims active calls through database leases and runs one CallMonitor per claimed call."""

    def __init__(self, *, owner: str | None = None) -> None:
        self.owner = owner or new_owner_id()
        self.lease = settings.REALTIME_MONITOR_LEASE_SECONDS
        self.started = timezone.now()
        self.monitors: dict[int, asyncio.Task[None]] = {}

    async def tick(self, *, renew: bool = True) -> None:
        for pk, task in list(self.monitors.items()):
            if task.done():
                del self.monitors[pk]
                if not task.cancelled() and task.exception() is not None:
                    logger.error("Monitor of call %s failed", pk, exc_info=task.exception())
        if renew:
            await sync_to_async(health.beat)(Heartbeat.Role.MONITORS, self.owner)
            held = await sync_to_async(services.monitor_renew)(owner=self.owner, lease_seconds=self.lease, call_ids=list(self.monitors))
            for pk in set(self.monitors) - held:
                # Lost the lease (ended, or taken over after a stall): another monitor has it now.
                self.monitors.pop(pk).cancel()
        room = settings.REALTIME_MONITOR_MAX_CALLS - len(self.monitors)
        for claimed in await sync_to_async(services.monitor_claim)(owner=self.owner, lease_seconds=self.lease, limit=room):
            call = claimed.call
            if claimed.previous_owner:
                logger.warning("Monitor %s recovers %s from %s", self.owner, call.call_id, claimed.previous_owner)
            else:
                logger.info("Monitor %s watches %s", self.owner, call.call_id)
            self.monitors[call.pk] = asyncio.ensure_future(
                CallMonitor(
                    call, recovered_from=claimed.previous_owner, watching_since=self.started, watched_before=claimed.watched_before
                ).run()
            )

    async def run(self, stop: asyncio.Event) -> None:
        logger.info("Call monitor supervisor %s started", self.owner)
        loop = asyncio.get_running_loop()
        renewed = float("-inf")
        try:
            while not stop.is_set():
                # Claims at every tick; the heartbeat and the renewal every third of a lease.
                renew = loop.time() - renewed >= self.lease / 3
                try:
                    await self.tick(renew=renew)
                    if renew:
                        renewed = loop.time()
                except Exception:
                    # A database hiccup must not stop monitoring; the next tick retries.
                    logger.exception("Monitor supervisor tick failed")
                    await sync_to_async(close_old_connections)()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=min(settings.REALTIME_MONITOR_CLAIM_SECONDS, self.lease / 3))
                except TimeoutError:
                    pass
        finally:
            tasks = list(self.monitors.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await sync_to_async(services.monitor_release)(owner=self.owner, call_ids=list(self.monitors))
