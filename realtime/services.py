"""The only code path that changes a call.

Every entry point (REST API, admin, WebSocket consumer, background jobs) calls these functions.
Each state change is a conditional UPDATE (`filter(pk=..., status__in=ALLOWED).update(...)`) so
racing requests produce exactly one transition, and each transition writes exactly one `CallEvent`
in the same transaction, then one push after commit (`publish.event_recorded`).

Transitions:   (new) -> pending -> active -> ended
                           |          `-> ended
                           `-> failed (upstream refused) / ended (ended during setup)

The async functions (`call_create`, `call_hangup`) wait on OpenAI without holding a thread and use
the sync transition functions for the database.

Sideband monitors (`monitor.py`) store what they receive through `call_record_events` (a batch per
transaction, usage and cost summed onto the call) and hold calls through `monitor_claim` /
`monitor_renew` / `monitor_release` (a lease, not a status: claiming never changes a call's state).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import select
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Q, QuerySet, Value, When
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _

from . import pricing, publish, redaction, selectors, statements, upstream, words
from .auth.lockout import client_address
from .counters import Tally, counted_events_part, hour_of, latency_change, micros
from .exceptions import CallStateConflict, RealtimeError, TooManyCalls, UpstreamError
from .models import (
    API_KEY_PREFIX,
    API_KEY_VISIBLE_CHARS,
    AccessAudit,
    ApiKey,
    Call,
    CallEvent,
    CallWord,
    SipRoute,
    WebhookDelivery,
    WebhookMessage,
    hash_api_key,
)
from .sessions import SessionConfig
from .webhooks import outbox

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

# Speech from either side (or the model's output): what keeps a call from being idle.
ACTIVITY_EVENTS = frozenset(
    {
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "response.done",
        "conversation.item.input_audio_transcription.completed",
    }
)
# What `_account` acts on (usage, transcripts, speech), besides counting the events.
ACCOUNTED_EVENTS = ACTIVITY_EVENTS | {"response.done", *selectors.TRANSCRIPT_EVENTS}
# Any fixed number: the PostgreSQL advisory lock that serialises the concurrency check.
_CAPACITY_LOCK = 0x1A905E

# The database work of call setup and hangup runs on one long-lived thread, whose connection stays
# open for the process (CONN_MAX_AGE), rather than on the thread Django starts for each request:
# that thread's connection is opened and closed with the request (for SQLite, a checkpoint and
# an fsync at every close). One thread suffices: each step is a short transaction, and SQLite
# serialises writers anyway. Off (settings.REALTIME_DB_THREAD) for tests that share the test
# runner's connection and its transaction.
_db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="realtime-db")


def in_db_thread(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`fn` as a coroutine that runs on the database thread (see `_db_thread`).

    The pushes `fn` schedules after its commits are delivered on the caller's loop, in order, once
    it returns (`publish.Pending`), rather than by the database thread hopping to the loop for
    each; and without the caller waiting for them: a create answers its 201 meanwhile.
    """
    if not settings.REALTIME_DB_THREAD:
        return sync_to_async(fn)
    on_thread = sync_to_async(_with_fresh_connection(fn), thread_sensitive=False, executor=_db_thread)

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        pending = publish.Pending(asyncio.get_running_loop())
        try:
            result = await on_thread(pending, *args, **kwargs)
        except asyncio.CancelledError:
            pending.abandon()
            raise
        except BaseException:
            pending.deliver()
            raise
        pending.deliver()
        return result

    return run


def _with_fresh_connection(fn: Callable[P, R]) -> Callable[..., R]:
    def run(pending: publish.Pending, *args: P.args, **kwargs: P.kwargs) -> R:
        _keep_usable_connection()
        return pending.collect(functools.partial(fn, *args, **kwargs))

    return run


def _ended_by_the_server() -> bool:
    """PostgreSQL's connection, idle between jobs, has something to read: the server ended it (a
    restart, an idle timeout, `pg_terminate_backend`) and said so. Seen without a round trip."""
    if connection.vendor != "postgresql":
        return False
    readable, _, _ = select.select([connection.connection.fileno()], [], [], 0)
    return bool(readable)


def _keep_usable_connection() -> None:
    """Before each job of the database thread: Django's check around a request
    (`close_if_unusable_or_obsolete`), less the age limit and the health check it schedules.

    The thread is one for the process, so its connection is kept from job to job rather than
    returned to PostgreSQL's pool (CONN_MAX_AGE is 0 with the pool) and taken again, with a
    health check's round trip, at every job: two per create, three per DELETE (PostgreSQL,
    production settings, broker CPU per create + DELETE 22.0 -> 17.7 ms). A connection that failed
    is still checked, and dropped if broken, before the next job, as Django does; one the server
    ended is dropped too."""
    if connection.connection is None:
        return
    if connection.get_autocommit() != connection.settings_dict["AUTOCOMMIT"] or _ended_by_the_server():
        connection.close()
    elif connection.errors_occurred:
        if connection.is_usable():
            connection.errors_occurred = False
        else:
            connection.close()


def _record(
    *,
    call: Call,
    event_type: str,
    actor: CallEvent.Actor,
    data: dict[str, Any],
    at: datetime,
    lifecycle: bool,
    tally: Tally | None = None,
    new: bool = False,
    where: dict[str, Any] | None = None,
    changes: dict[str, Any] | None = None,
) -> CallEvent | None:
    """Write the event, count it (with whatever else the transition changes in the statistics),
    and schedule its push; with the change it records, written with it (`statements.transition`):
    the call inserted (`new`), or `changes` applied if the call still matches `where` (plain
    values; `call` gets them). None, and nothing written, if it no longer matched."""
    event = CallEvent(call=call, event_type=event_type, actor=actor, data=data, created_at=at)
    upserts = (tally or Tally(call.api_key_id)).events(1).upserts()
    # The webhook deliveries of a lifecycle event go in its transaction (the outbox: see realtime.webhooks).
    endpoints = statements.transition(
        event, upserts=upserts, endpoints=lifecycle and event_type in outbox.SENT, new=new, where=where, changes=changes
    )
    if endpoints is None:
        return None
    for name, value in (changes or {}).items():
        setattr(call, name, value)
    publish.event_recorded(event=event, call=call, lifecycle=lifecycle)
    if lifecycle:
        outbox.enqueue(call=call, event_type=event_type, at=at, endpoints=endpoints)
    return event


@dataclass(frozen=True)
class Recorded:
    """The event a transition writes: `tally` gives what it counts from the status the call left."""

    event_type: str
    actor: CallEvent.Actor
    data: dict[str, Any]
    at: datetime
    tally: Callable[[str], Tally] | None = None


def _transition(
    *, call: Call, allowed: tuple[str, ...], changes: dict[str, Any], record: Recorded, values: dict[str, Any] | None = None
) -> str | None:
    """Apply `changes` only if the call is still in one of `allowed`, with its event (`record`);
    returns the status it left.

    One conditional UPDATE per allowed status, the one the caller saw first: the UPDATE that
    matches says which state the call left (the counters need it) without reading it back, and
    two racing transitions still produce exactly one change. `call` gets the changes it made
    (`values` for those made by an expression).
    """
    seen = call.__dict__.get("status")
    plain = not any(hasattr(value, "resolve_expression") for value in changes.values())
    for status in sorted(allowed, key=lambda s: s != seen):
        tally = record.tally(status) if record.tally is not None else None
        recorded = functools.partial(
            _record,
            call=call,
            event_type=record.event_type,
            actor=record.actor,
            data=record.data,
            at=record.at,
            lifecycle=True,
            tally=tally,
        )
        if plain:
            if recorded(where={"status": status}, changes=changes) is not None:
                return status
            continue
        # An UPDATE by expression, then the event: one transaction.
        statements.begin()
        if Call.objects.filter(pk=call.pk, status=status).update(**changes):
            for name, value in {**changes, **(values or {})}.items():
                setattr(call, name, value)
            recorded()
            return status
    return None


# --- sync transitions -----------------------------------------------------------------------


def call_open(
    *,
    offer: str,
    session: SessionConfig,
    source: Call.Source,
    actor: CallEvent.Actor,
    api_key: ApiKey | None = None,
    data: dict[str, Any] | None = None,
    event_type: str = "call.created",
    fields: dict[str, Any] | None = None,
    check_capacity: bool = True,
) -> Call:
    """Record a new pending call before anything is sent upstream (the audit trail starts here).

    `api_key` is the key that owns the call (it alone may see and end it); `data` says who asked
    (`{"api_key": prefix}` or `{"staff_user": name}`) in the call.created event.
    """
    now = timezone.now()
    with statements.atomic():
        if check_capacity:
            _check_capacity(api_key=api_key)
        call = Call(
            **(fields or {}),
            source=source,
            status=Call.Status.PENDING,
            model=session.model,
            voice=session.voice,
            modalities=session.modalities,
            instructions=session.instructions,
            temperature=session.temperature,
            max_output_tokens=session.max_output_tokens,
            session_requested=session.requested,
            upstream_model=session.upstream_model,
            session_upstream=session.upstream,
            sdp_offer=offer,
            created_at=now,
            api_key=api_key,
            max_duration_seconds=session.max_duration_seconds or settings.REALTIME_MAX_DURATION_SECONDS,
        )
        payload: dict[str, Any] = {"model": session.model, "voice": session.voice, "source": source, **(data or {})}
        if session.notes:
            # What we could not pass on as asked (a seed model alias, temperature): noted, not hidden.
            payload["adjustments"] = session.notes
        if session.warnings:
            payload["warnings"] = session.warnings
        tally = Tally.of(call).opened(call)
        _record(call=call, event_type=event_type, actor=actor, data=payload, at=now, lifecycle=True, tally=tally, new=True)
    return call


def _check_capacity(*, api_key: ApiKey | None) -> None:
    """Refuse a new call over the limits. Call inside the transaction that inserts the call: the
    counts and the insert must not interleave with another's.

    - REALTIME_MAX_ACTIVE_CALLS live calls in all;
    - the key's own `max_active_calls` (empty: REALTIME_MAX_ACTIVE_CALLS_PER_KEY; 0: none);
    - fair share: the last REALTIME_RESERVED_CALLS places of the global cap are kept for keys with
      no call in progress (and for staff and local mode, who are not tenants), so one key cannot
      take every place.
    """
    limit = settings.REALTIME_MAX_ACTIVE_CALLS
    per_key = settings.REALTIME_MAX_ACTIVE_CALLS_PER_KEY
    if api_key is not None and api_key.max_active_calls is not None:
        per_key = api_key.max_active_calls
    if not limit and not (per_key and api_key):
        return
    # The counts and the insert in one transaction.
    statements.begin()
    # SQLite's IMMEDIATE transactions already hold the write lock from BEGIN; PostgreSQL needs
    # a lock of its own so two creates cannot both count the same free place.
    lock = _CAPACITY_LOCK if connection.vendor == "postgresql" else None
    # Both counts in one read of the live calls (the key's among them) when both are needed.
    total, mine = statements.live_calls(api_key_id=api_key.pk if api_key is not None else None, total=bool(limit), lock=lock)
    if limit and total >= limit:
        raise TooManyCalls(_("Too many calls in progress (at most %(n)d); try again later.") % {"n": limit}, details={"limit": limit})
    if api_key is None:
        return
    if per_key and mine >= per_key:
        raise TooManyCalls(
            _("Too many calls in progress for this API key (at most %(n)d); try again later.") % {"n": per_key},
            details={"limit": per_key, "scope": "api_key"},
        )
    reserved = settings.REALTIME_RESERVED_CALLS
    if limit and mine and total >= limit - reserved:
        raise TooManyCalls(
            _("The remaining call places are kept for other clients; try again when one of your calls has ended."),
            details={"limit": limit, "reserved": reserved, "scope": "fair_share"},
        )


def call_answer(*, call: Call, created: upstream.CreatedCall) -> bool:
    """pending -> active once OpenAI answered. False if the call was ended meanwhile."""
    selectors.read_deferred(call)
    now = timezone.now()
    with statements.atomic():
        changes = {"status": Call.Status.ACTIVE, "upstream_id": created.upstream_id, "sdp_answer": created.sdp_answer, "answered_at": now}
        changes["deadline_at"] = now + timedelta(seconds=call.max_duration_seconds or settings.REALTIME_MAX_DURATION_SECONDS)
        answered = Recorded(
            "call.answered",
            CallEvent.Actor.UPSTREAM,
            {"upstream_id": created.upstream_id},
            now,
            lambda old: Tally.of(call).moved(old=old, new=Call.Status.ACTIVE),
        )
        return _transition(call=call, allowed=(Call.Status.PENDING,), changes=changes, record=answered) is not None


def call_fail(*, call: Call, error: RealtimeError) -> bool:
    """pending -> failed: OpenAI refused or never answered. The call never became active."""
    selectors.read_deferred(call)
    now = timezone.now()
    with statements.atomic():
        changes = {
            "status": Call.Status.FAILED,
            "ended_at": now,
            "end_reason": Call.EndReason.UPSTREAM_ERROR,
            "error_message": error.message[:2000],
        }
        data = {"code": error.code, "message": error.message, "details": error.details}
        failed = Recorded(
            "call.failed",
            CallEvent.Actor.UPSTREAM,
            data,
            now,
            lambda old: Tally.of(call).moved(old=old, new=Call.Status.FAILED, end_reason=Call.EndReason.UPSTREAM_ERROR),
        )
        return _transition(call=call, allowed=(Call.Status.PENDING,), changes=changes, record=failed) is not None


def call_end(*, call: Call, reason: Call.EndReason, actor: CallEvent.Actor, data: dict[str, Any] | None = None) -> Call:
    """pending|active -> ended, with a reason. Raises CallStateConflict if it had already ended."""
    selectors.read_deferred(call)
    now = timezone.now()
    duration = max((now - call.created_at).total_seconds(), 0.0)
    with statements.atomic():
        changes: dict[str, Any] = {"status": Call.Status.ENDED, "ended_at": now, "end_reason": reason, "duration_seconds": duration}
        per_minute = pricing.duration_cost(call.upstream_model, duration)
        if per_minute is not None:
            # Models billed by the minute: the call's duration is its price (tokens cost nothing more).
            changes["cost_usd"] = Coalesce(F("cost_usd"), Value(Decimal(0))) + per_minute
        values = {} if per_minute is None else {"cost_usd": (call.cost_usd or Decimal(0)) + per_minute}

        def tally(old: str) -> Tally:
            counted = Tally.of(call).moved(old=old, new=Call.Status.ENDED, end_reason=reason, duration=duration)
            if per_minute is not None:
                counted.usage(upstream_model=call.upstream_model, input_tokens=0, output_tokens=0, cost_micros=micros(per_minute))
            return counted

        payload = {"reason": reason, "duration_seconds": round(duration), **(data or {})}
        ended = Recorded("call.ended", actor, payload, now, tally)
        # The call holds the value, not the expression the UPDATE added it with.
        if _transition(call=call, allowed=Call.ENDABLE, changes=changes, record=ended, values=values) is None:
            call.status = Call.objects.values_list("status", flat=True).get(pk=call.pk)
            raise CallStateConflict(
                _("The call is already %(status)s.") % {"status": call.get_status_display().lower()},
                details={"call_id": call.call_id, "status": call.status},
            )
    return call


def call_note_upstream_closed(*, call: Call, hung_up: bool) -> None:
    """OpenAI confirmed the hangup (or no longer knew the call): nothing runs upstream any more."""
    now = timezone.now()
    with statements.atomic():
        data = {"upstream_id": call.upstream_id, "already_gone": not hung_up}
        _record(
            call=call,
            event_type="upstream.hangup",
            actor=CallEvent.Actor.SYSTEM,
            data=data,
            at=now,
            lifecycle=False,
            where={"upstream_closed_at": None},
            changes={"upstream_closed_at": now},
        )


def call_note_upstream_id(*, call: Call, upstream_id: str) -> None:
    """Keep the upstream id of a call ended during its setup, so its hangup can be retried."""
    if Call.objects.filter(pk=call.pk, upstream_id="").update(upstream_id=upstream_id):
        call.upstream_id = upstream_id
    else:
        call.upstream_id = Call.objects.values_list("upstream_id", flat=True).get(pk=call.pk)


def hangup_backoff(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: doubling, capped."""
    return min(settings.REALTIME_HANGUP_RETRY_SECONDS * 2 ** max(attempts - 1, 0), settings.REALTIME_HANGUP_RETRY_MAX_SECONDS)


def call_note_hangup_failed(*, call: Call, error: RealtimeError) -> None:
    """Record a failed upstream hangup and schedule the sweeper's next try (backoff)."""
    now = timezone.now()
    with transaction.atomic():
        Call.objects.filter(pk=call.pk).update(hangup_attempts=F("hangup_attempts") + 1)
        attempts = Call.objects.values_list("hangup_attempts", flat=True).get(pk=call.pk)
        retry_at = now + timedelta(seconds=hangup_backoff(attempts))
        Call.objects.filter(pk=call.pk).update(hangup_retry_at=retry_at)
        call.hangup_attempts, call.hangup_retry_at = attempts, retry_at
        data = {
            "upstream_id": call.upstream_id,
            "code": error.code,
            "message": error.message,
            "details": error.details,
            "attempt": attempts,
            "retry_at": int(retry_at.timestamp()),
        }
        _record(call=call, event_type="upstream.hangup_failed", actor=CallEvent.Actor.SYSTEM, data=data, at=now, lifecycle=False)


# --- async orchestration --------------------------------------------------------------------


async def call_create(
    *,
    offer: str,
    session: SessionConfig,
    source: Call.Source = Call.Source.WEBRTC,
    actor: CallEvent.Actor = CallEvent.Actor.API,
    api_key: ApiKey | None = None,
    data: dict[str, Any] | None = None,
    admit: Callable[[], dict[str, Any]] | None = None,
) -> Call:
    """Record the call, ask OpenAI for an answer, and activate it; a refusal leaves it `failed`.

    `admit`, if given, runs on the database thread just before the call is recorded, in the same
    trip (the API's checks of the request, which read its key there): it returns who the call is
    for (`actor`, `api_key`, `data`, in place of those arguments) or raises, and nothing is recorded.
    """
    opening = {"actor": actor, "api_key": api_key, "data": data}
    call = await in_db_thread(_admitted_open)(admit, offer=offer, session=session, source=source, **opening)
    try:
        created = await upstream.create_call(sdp=offer, session=session.upstream)
    except UpstreamError as exc:
        await in_db_thread(call_fail)(call=call, error=exc)
        raise
    try:
        answered = await in_db_thread(call_answer)(call=call, created=created)
    except Exception:
        # The answer could not be recorded (the database failed): the caller never gets it, so the
        # call would run upstream unowned. Hang it up now; the sweeper ends the pending row later.
        logger.exception("Could not record the answer of %s; hanging it up upstream", call.call_id)
        with contextlib.suppress(UpstreamError):
            await upstream.hangup_call(upstream_id=created.upstream_id)
        raise
    if not answered:
        # Ended (DELETE, admin) while OpenAI was answering: do not leave it running upstream.
        await in_db_thread(call_note_upstream_id)(call=call, upstream_id=created.upstream_id)
        await hangup_upstream(call=call)
        raise CallStateConflict(_("The call was ended while it was being set up."), details={"call_id": call.call_id})
    return call


def _admitted_open(admit: Callable[[], dict[str, Any]] | None, **opening: Any) -> Call:
    if admit is not None:
        opening |= admit()
    return call_open(**opening)


async def call_hangup(*, call: Call, reason: Call.EndReason, actor: CallEvent.Actor, data: dict[str, Any] | None = None) -> Call:
    """End the call here (exactly once), then hang it up upstream; the winner alone hangs up."""
    return await call_hangup_by(functools.partial(call_end, call=call, reason=reason, actor=actor, data=data))


async def call_hangup_by(end: Callable[[], Call]) -> Call:
    """`call_hangup`, the call ended by `end` on the database thread: `call_end` with its arguments,
    after what the caller reads or checks first in the same trip (the API's DELETE: its key, the call)."""
    call = await in_db_thread(end)()
    if call.upstream_id:
        await hangup_upstream(call=call)
    return call


async def hangup_upstream(*, call: Call) -> bool:
    """Ask OpenAI to hang up; record the outcome. True once nothing runs upstream any more."""
    try:
        hung_up = await upstream.hangup_call(upstream_id=call.upstream_id)
    except UpstreamError as exc:
        logger.warning("Upstream hangup of %s failed: %s", call.call_id, exc.code)
        await in_db_thread(call_note_hangup_failed)(call=call, error=exc)
        return False
    await in_db_thread(call_note_upstream_closed)(call=call, hung_up=hung_up)
    return True


# --- sideband monitoring ----------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamEvent:
    """One server event received on a call's sideband, as a monitor hands it over for storage."""

    event_type: str
    event_id: str
    data: dict[str, Any]
    received_at: datetime


def call_record_events(*, call: Call, events: list[UpstreamEvent], metrics: dict[str, Any] | None = None) -> int:
    """Store a batch of upstream events in one transaction; sum their usage and cost onto the call.

    Idempotent per upstream `event_id`: events already stored (two monitors overlapping during a
    takeover) are skipped, so each is recorded once. Returns how many were stored. One push after
    commit carries the whole batch. `metrics`, when the batch changed them, ride the same
    transaction (`call_record_metrics`).

    On PostgreSQL, a batch with nothing to account for (no usage, transcript or speech: a call's
    `session.created`, say) and no figures is one statement, its counters included, outside any
    transaction (a BEGIN, a read and a COMMIT fewer, at the start of every call).
    """
    if not events:
        if metrics is not None:
            call_record_metrics(call=call, metrics=metrics)
        return 0
    postgresql = connection.vendor == "postgresql"
    if postgresql and metrics is None and not connection.in_atomic_block and not any(e.event_type in ACCOUNTED_EVENTS for e in events):
        rows = statements.insert_events_once(_built(call, _distinct(events)), counted=counted_events_part(call.api_key_id))
        publish.events_recorded(events=rows, call=call)
        return len(rows)
    with transaction.atomic():
        if metrics is not None:
            call_record_metrics(call=call, metrics=metrics)
        # PostgreSQL skips the stored ones as it inserts; SQLite reads them first.
        stored: set[str] = set()
        if not postgresql:
            ids = [e.event_id for e in events if e.event_id]
            stored = set(CallEvent.objects.filter(call_id=call.pk, upstream_event_id__in=ids).values_list("upstream_event_id", flat=True))
        fresh = _distinct(events, stored)
        built = _built(call, fresh)
        if postgresql:
            rows = statements.insert_events_once(built)
            # Those it skipped have no primary key.
            fresh = [e for e, row in zip(fresh, built, strict=True) if row.pk is not None]
        else:
            rows = CallEvent.objects.bulk_create(built)
        if not rows:
            return 0
        tally = Tally(call.api_key_id).events(len(rows))
        _account(call=call, events=fresh, tally=tally)
        tally.save()
        publish.events_recorded(events=rows, call=call)
    return len(rows)


def _distinct(events: list[UpstreamEvent], stored: Collection[str] = ()) -> list[UpstreamEvent]:
    """Each upstream event once: not those `stored` already, nor one twice in the batch (events
    without an id are all kept)."""
    seen = set(stored)
    fresh: list[UpstreamEvent] = []
    for event in events:
        if event.event_id and event.event_id in seen:
            continue
        seen.add(event.event_id)
        fresh.append(event)
    return fresh


def _built(call: Call, events: list[UpstreamEvent]) -> list[CallEvent]:
    return [
        CallEvent(
            call_id=call.pk,
            event_type=e.event_type[:80],
            actor=CallEvent.Actor.UPSTREAM,
            data=_stored_data(e),
            created_at=e.received_at,
            upstream_event_id=e.event_id[:64],
        )
        for e in events
    ]


def call_record_metrics(*, call: Call, metrics: dict[str, Any]) -> None:
    """Store a call's quality figures (realtime.quality) and their two indexed columns: one
    conditional UPDATE when they count the turns already stored; otherwise one UPDATE after reading
    the stored figures under lock, and the turns they add to the call's latency histogram go to the
    hourly counters of its creation hour and model in the same transaction (one upsert).

    Not a state transition, so no CallEvent: the figures are pushed (`call.metrics`) after commit to
    the call's subscribers, and to the list feed when a turn or an interruption was added (not for
    every talk-time tick: the list feed goes to everyone). Written as turns complete and at the end.
    """
    latency = metrics.get("latency_ms") or {}
    counted = ("turns", "interruptions")
    # Most writes add no turn and no interruption (talk time as it grows, the last figures of a
    # call): one conditional UPDATE, which holds only if the stored figures count the same; then
    # there is nothing for the counters or the list feed (on PostgreSQL, outside a transaction, no
    # BEGIN and COMMIT either: four round trips to one, at the end of every measured call).
    if statements.update_metrics_if_same_counts(call.pk, metrics, latency.get("p95"), latency.get("max")):
        call.metrics, call.latency_p95_ms, call.latency_max_ms = metrics, latency.get("p95"), latency.get("max")
        publish.metrics_changed(call=call, to_list=False)
        return
    with transaction.atomic():
        # The stored figures, locked: the hourly counters add what these add to the stored latency
        # histogram, so each turn counts once however often (and by however many monitors, during a
        # takeover) the figures are rewritten.
        stored = Call.objects.select_for_update().only("pk", "metrics", "created_at", "upstream_model").get(pk=call.pk)
        # Counted from zero: a call's first figures with no turn and no interruption (one that
        # ended before anyone spoke, say) add nothing the list shows.
        to_list = any((stored.metrics or {}).get(k, 0) != metrics.get(k, 0) for k in counted)
        Call.objects.filter(pk=call.pk).update(metrics=metrics, latency_p95_ms=latency.get("p95"), latency_max_ms=latency.get("max"))
        change = latency_change(stored.metrics, metrics)
        if change:
            Tally(None, hour=hour_of(stored.created_at), upstream_model=stored.upstream_model).turns(change).save()
    call.metrics, call.latency_p95_ms, call.latency_max_ms = metrics, latency.get("p95"), latency.get("max")
    publish.metrics_changed(call=call, to_list=to_list)


def _stored_data(event: UpstreamEvent) -> dict[str, Any]:
    """An event's data as stored: transcripts without phone numbers and e-mail addresses when
    settings.REALTIME_REDACT_TRANSCRIPTS (the usage summed from it is untouched)."""
    if settings.REALTIME_REDACT_TRANSCRIPTS and event.event_type in SPEECH_EVENTS:
        redacted: dict[str, Any] = redaction.redact(event.data, region=settings.REALTIME_REDACT_PHONE_REGION)
        return redacted
    return event.data


def _account(*, call: Call, events: list[UpstreamEvent], tally: Tally) -> None:
    """Add the batch's usage to the call (one UPDATE) and to `tally`, and note that a transcript exists."""
    responses = [
        u for u in (e.data.get("response", {}).get("usage") for e in events if e.event_type == "response.done") if isinstance(u, dict)
    ]
    transcribed = (e.data.get("usage") for e in events if e.event_type == "conversation.item.input_audio_transcription.completed")
    transcriptions = [u for u in transcribed if isinstance(u, dict)]
    transcript = any(e.event_type in selectors.TRANSCRIPT_EVENTS for e in events)
    spoke = [e.received_at for e in events if e.event_type in ACTIVITY_EVENTS]
    if spoke:
        # Idle hang-up counts from here (sweeper): one small UPDATE per batch, not per event.
        Call.objects.filter(pk=call.pk).update(last_activity_at=max(spoke))
        call.last_activity_at = max(spoke)
    if not responses and not transcriptions and not transcript:
        return
    # A monitor holds the call alone (its lease), so this read-modify-write has no concurrent
    # writer; select_for_update makes that hold on PostgreSQL too (SQLite's IMMEDIATE already does).
    row = (
        Call.objects.select_for_update()
        .only("pk", "usage", "cost_usd", "input_tokens", "output_tokens", "upstream_model", "session_upstream", "created_at")
        .get(pk=call.pk)
    )
    # The hourly counters count usage in the hour the call was created in.
    tally.hour, tally.upstream_model = hour_of(row.created_at), row.upstream_model
    usage = dict(row.usage)
    prices = pricing.prices_for(row.upstream_model)
    cost = row.cost_usd if prices is not None else None
    for response_usage in responses:
        usage = pricing.add_usage(usage, {**response_usage, "responses": 1})
        if cost is not None and prices is not None:
            cost += pricing.response_cost(response_usage, prices)
    model = ((row.session_upstream.get("audio") or {}).get("input") or {}).get("transcription") or {}
    for transcription_usage in transcriptions:
        usage["transcription"] = pricing.add_usage(usage.get("transcription") or {}, {**transcription_usage, "items": 1})
        extra = pricing.transcription_cost(transcription_usage, str(model.get("model", "")))
        if extra is not None and cost is not None:
            cost += extra
    if cost is not None:
        # Stored with the column's 6 decimals, so the counters add exactly what the row holds.
        cost = cost.quantize(Decimal("0.000001"))
    changes: dict[str, Any] = {"usage": usage, "cost_usd": cost}
    changes["input_tokens"] = usage.get("input_tokens", 0)
    changes["output_tokens"] = usage.get("output_tokens", 0)
    if transcript:
        changes["has_transcript"] = True
        _index_words(call=call, events=events)
    Call.objects.filter(pk=call.pk).update(**changes)
    tally.usage(
        upstream_model=row.upstream_model,
        input_tokens=changes["input_tokens"] - row.input_tokens,
        output_tokens=changes["output_tokens"] - row.output_tokens,
        cost_micros=micros(cost) - micros(row.cost_usd),
    )
    for name, value in changes.items():
        setattr(call, name, value)


def _index_words(*, call: Call, events: list[UpstreamEvent]) -> None:
    """Add the words said in the batch to the call's searchable words (`q`): the texts the
    transcript is made of (`selectors.call_transcript`), either side."""
    texts: list[str] = []
    for event in events:
        # As stored: a redacted number or address is not searchable either.
        data = _stored_data(event)
        if event.event_type == "conversation.item.done":
            item = data.get("item") or {}
            if isinstance(item, dict) and item.get("type") == "message":
                content = item.get("content") or ()
                texts += [str(c.get("text") or c.get("transcript") or "") for c in content if isinstance(c, dict)]
        elif event.event_type in selectors.TRANSCRIPT_EVENTS and isinstance(data.get("transcript"), str):
            texts.append(data["transcript"])
    found = words.of_texts(texts)
    if found:
        CallWord.objects.bulk_create([CallWord(call_id=call.pk, word=w) for w in found], ignore_conflicts=True)


@dataclass(frozen=True)
class Claimed:
    """A call a monitor now holds, and who held it before ("" for a new call or a clean release).

    A previous holder means its process died (its lease ran out): the call is being recovered.
    `watched_before` is false for a call no monitor ever held (its lease never set: a release
    leaves the lease's end behind), which has no stored events for the new monitor to read back.
    """

    call: Call
    previous_owner: str
    watched_before: bool


def _claim(*, claimable: Q, held_by: str, changes: dict[str, Any], limit: int, order_by: tuple[str, ...] = ()) -> list[tuple[Call, Any]]:
    """Claim up to `limit` calls matching `claimable`, each with the `held_by` value it had.

    Each claim is a conditional UPDATE on the value of `held_by` seen by the SELECT: if another
    process claimed the call since, this updates nothing and the call is not ours.
    """
    candidates = list(Call.objects.filter(claimable).order_by(*order_by).values_list("pk", held_by)[:limit])
    # Each UPDATE is one statement, so its own transaction.
    won = [(pk, seen) for pk, seen in candidates if Call.objects.filter(claimable, pk=pk, **{held_by: seen}).update(**changes)]
    if not won:
        return []
    # The calls won, in one read and without their large documents: what a monitor or the sweeper
    # changes is loaded by `selectors.read_deferred`, and the offer and answer (TOASTed on
    # PostgreSQL) are read by nobody here. (A call deleted since, by the retention purge, is no longer anyone's to watch.)
    calls = Call.objects.defer(*selectors.DOCUMENTS).in_bulk([pk for pk, _seen in won])
    return [(calls[pk], seen) for pk, seen in won if pk in calls]


def monitor_claim(*, owner: str, lease_seconds: float, limit: int) -> list[Claimed]:
    """Claim up to `limit` active calls that no live monitor holds (free or expired lease)."""
    if limit <= 0:
        return []
    now = timezone.now()
    changes = {"monitor_owner": owner, "monitor_lease_until": now + timedelta(seconds=lease_seconds)}
    claimed: list[Claimed] = []
    # Calls never held, then expired or released leases: each a range of call_monitor_claim_idx,
    # so a tick finds nothing to claim without reading every active call's lease (as the two in
    # one OR would).
    for watched_before, lease in ((False, Q(monitor_lease_until__isnull=True)), (True, Q(monitor_lease_until__lt=now))):
        claimable = Q(status=Call.Status.ACTIVE) & ~Q(upstream_id="") & lease
        order = ("monitor_lease_until", "id")
        won = _claim(claimable=claimable, held_by="monitor_owner", changes=changes, limit=limit - len(claimed), order_by=order)
        claimed += [Claimed(call, previous, watched_before) for call, previous in won]
    return claimed


def _hangup_due(*, now: datetime, grace_seconds: float) -> Q:
    """Ended calls whose upstream hangup is unconfirmed and due: past `hangup_retry_at`, or never
    tried by a sweeper and ended more than `grace_seconds` ago (whoever ended it is still hanging
    up before that).

    Spelled for the partial index call_hangup_retry_idx (ended calls whose upstream side is open):
    no status term, which planners would rather answer from the status index, scanning every
    ended call; "ended" is said by ended_at, as in the index's condition.
    """
    due = Q(hangup_retry_at__lte=now) | Q(hangup_retry_at__isnull=True, ended_at__lt=now - timedelta(seconds=grace_seconds))
    return Q(upstream_closed_at__isnull=True, ended_at__isnull=False, upstream_id__gt="") & due


def hangup_retry_due(*, now: datetime, grace_seconds: float) -> QuerySet[Call]:
    # No order: the first `limit` found are claimed (the model's newest-first order would sort them all).
    return Call.objects.filter(_hangup_due(now=now, grace_seconds=grace_seconds)).order_by()


def hangup_retry_claim(*, now: datetime, grace_seconds: float, claim_seconds: float, limit: int) -> list[Call]:
    """Calls from `hangup_retry_due`, claimed for one retry each. A claim moves `hangup_retry_at`
    `claim_seconds` on, so it is not claimed again meanwhile, even if its sweeper dies mid-way."""
    changes = {"hangup_retry_at": now + timedelta(seconds=claim_seconds)}
    claimable = _hangup_due(now=now, grace_seconds=grace_seconds)
    return [call for call, _seen in _claim(claimable=claimable, held_by="hangup_retry_at", changes=changes, limit=limit)]


def monitor_renew(*, owner: str, lease_seconds: float, call_ids: list[int]) -> set[int]:
    """Extend this monitor's leases on the calls it watches; returns the ones it still holds."""
    if not call_ids:
        return set()
    now = timezone.now()
    with transaction.atomic():
        # By id: the status through no index (SQLite would rather read every active call's entry).
        held = Call.objects.filter(pk__in=call_ids, monitor_owner=owner).alias(live=selectors.unindexed("status"))
        held = held.filter(live=Call.Status.ACTIVE)
        held.update(monitor_lease_until=now + timedelta(seconds=lease_seconds))
        return set(held.order_by().values_list("pk", flat=True))


def monitor_release(*, owner: str, call_ids: list[int]) -> None:
    """Give calls back at a clean shutdown, so another monitor takes them without waiting: the
    lease ends now (not unset, which would say that no monitor ever held them: `Claimed`)."""
    if call_ids:
        Call.objects.filter(pk__in=call_ids, monitor_owner=owner).update(monitor_owner="", monitor_lease_until=timezone.now())


# --- API keys -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessActor:
    """Who changes access, for the audit: a staff account and its address, the command line, the system."""

    label: str
    user: Any = None
    address: str | None = None

    @classmethod
    def of_request(cls, request: HttpRequest) -> AccessActor:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return cls(label="", address=client_address(request))
        return cls(label=user.get_username(), user=user, address=client_address(request))


COMMAND_LINE = AccessActor(label="manage.py")
SYSTEM = AccessActor(label="system")


def _audit(action: AccessAudit.Action, by: AccessActor, **fields: Any) -> AccessAudit:
    return AccessAudit.objects.create(action=action, actor=by.label, user=by.user, address=by.address, **fields)


@transaction.atomic
def api_key_create(key: ApiKey, *, by: AccessActor) -> str:
    """Give an unsaved key (name, owner, expiry set) its secret and save it, audited; returns the raw
    key, which the caller shows once and forgets: only its hash and a visible prefix are stored."""
    raw = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key.prefix, key.key_hash = raw[:API_KEY_VISIBLE_CHARS], hash_api_key(raw)
    key.save()
    _audit(AccessAudit.Action.KEY_CREATED, by, api_key=key)
    return raw


@transaction.atomic
def api_key_revoke(keys: QuerySet[ApiKey], *, by: AccessActor) -> int:
    """Refuse these keys from now on; returns how many were not revoked yet. Each key is revoked by
    its own conditional UPDATE, so a key revoked twice keeps its first revocation (and audit record)."""
    now, revoked = timezone.now(), []
    for pk in list(keys.filter(revoked_at__isnull=True).values_list("pk", flat=True)):
        if ApiKey.objects.filter(pk=pk, revoked_at__isnull=True).update(revoked_at=now):
            _audit(AccessAudit.Action.KEY_REVOKED, by, api_key_id=pk, at=now)
            revoked.append(pk)
    publish.api_keys_closed(api_key_ids=revoked, reason=publish.KEY_REVOKED)
    return len(revoked)


@transaction.atomic
def api_keys_expire(*, now: datetime) -> int:
    """Note each key whose expiry has passed, once across processes (the conditional UPDATE of
    `expiry_handled_at` is the claim), and close its sockets; returns how many. Refusal needs no
    write: `is_usable` checks the expiry on every request."""
    expired = []
    due = ApiKey.objects.filter(expires_at__lte=now, revoked_at__isnull=True, expiry_handled_at__isnull=True)
    for pk, expires_at in list(due.values_list("pk", "expires_at")):
        if ApiKey.objects.filter(pk=pk, expiry_handled_at__isnull=True).update(expiry_handled_at=now):
            _audit(AccessAudit.Action.KEY_EXPIRED, SYSTEM, api_key_id=pk, at=expires_at)
            expired.append(pk)
    publish.api_keys_closed(api_key_ids=expired, reason=publish.KEY_EXPIRED)
    return len(expired)


def staff_locked_out(*, username: str, address: str | None) -> AccessAudit | None:
    """A sign-in locked out after repeated failures (django-axes' `user_locked_out` signal, also sent
    for every attempt while locked out): one record per lockout, not per refused attempt."""
    username = username[:150]
    hours = settings.AXES_COOLOFF_TIME
    recent = AccessAudit.objects.filter(action=AccessAudit.Action.STAFF_LOCKED_OUT, username=username, address=address)
    if hours:
        recent = recent.filter(at__gte=timezone.now() - timedelta(hours=hours))
    if recent.exists():
        return None
    user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
    return _audit(AccessAudit.Action.STAFF_LOCKED_OUT, AccessActor(label=username, user=user, address=address), username=username)


# --- phone calls (SIP) ------------------------------------------------------------------------


@dataclass(frozen=True)
class SipDecision:
    """What a route decided for an incoming call: accept with `session`, or reject with `status`."""

    accept: bool
    session: SessionConfig
    status: int = 603
    route: SipRoute | None = None
    reason: str = ""


def sip_call_receive(
    *, webhook_id: str, upstream_id: str, caller: str, called: str, headers: list[dict[str, str]], decision: SipDecision
) -> Call | None:
    """Record an incoming phone call (`call.incoming`) once per webhook-id; None for a replay.

    The delivery and the call are written in one transaction: a replay finds the delivery and
    creates nothing, and a crash leaves neither.
    """
    fields = {
        "upstream_id": upstream_id,
        "sip_caller": caller,
        "sip_called": called,
        "sip_headers": headers,
        "sip_route": decision.route,
    }
    route = decision.route
    data = {
        "caller": caller,
        "called": called,
        "route": route.name if route else None,
        "route_id": route.pk if route else None,
        "action": "accept" if decision.accept else "reject",
        "upstream_id": upstream_id,
    }
    with transaction.atomic():
        try:
            with transaction.atomic():
                WebhookDelivery.objects.create(webhook_id=webhook_id, event_type="realtime.call.incoming")
        except IntegrityError:
            return None
        common: dict[str, Any] = {"offer": "", "session": decision.session, "source": Call.Source.SIP, "actor": CallEvent.Actor.UPSTREAM}
        try:
            return call_open(**common, data=data, event_type="call.incoming", fields=fields, check_capacity=decision.accept)
        except TooManyCalls:
            # Over the concurrency limit: recorded all the same, and rejected as busy.
            call = call_open(**common, data={**data, "action": "reject"}, event_type="call.incoming", fields=fields, check_capacity=False)
            call_reject(call=call, status=settings.REALTIME_SIP_BUSY_STATUS, reason="too_many_calls")
            return call


def call_reject(*, call: Call, status: int, reason: str = "route") -> bool:
    """pending -> ended (`rejected`) with the SIP status sent to the caller. False if already decided."""
    now = timezone.now()
    with statements.atomic():
        changes = {"status": Call.Status.ENDED, "ended_at": now, "end_reason": Call.EndReason.REJECTED, "sip_status": status}
        duration = changes["duration_seconds"] = max((now - call.created_at).total_seconds(), 0.0)
        rejected = Recorded(
            "call.rejected",
            CallEvent.Actor.SYSTEM,
            {"status_code": status, "reason": reason},
            now,
            lambda old: Tally.of(call).moved(old=old, new=Call.Status.ENDED, end_reason=Call.EndReason.REJECTED, duration=duration),
        )
        return _transition(call=call, allowed=(Call.Status.PENDING,), changes=changes, record=rejected) is not None


def call_note_transfer(*, call: Call, target_uri: str, actor: CallEvent.Actor, data: dict[str, Any] | None = None) -> bool:
    """Record a transfer OpenAI accepted (REFER sent): one `call.transferred` per transfer of an active call."""
    now = timezone.now()
    with statements.atomic():
        transferred = Recorded("call.transferred", actor, {"target_uri": target_uri, **(data or {})}, now)
        return _transition(call=call, allowed=(Call.Status.ACTIVE,), changes={"transferred_to": target_uri}, record=transferred) is not None


async def sip_call_decide(*, call: Call, decision: SipDecision) -> Call:
    """Carry out a route's decision upstream: accept (pending -> active) or reject."""
    if not decision.accept and call.status == Call.Status.PENDING:
        await in_db_thread(call_reject)(call=call, status=decision.status, reason=decision.reason or "route")
    if call.end_reason == Call.EndReason.REJECTED and call.sip_status:
        # Rejected by its route, or as busy when it was recorded.
        try:
            await upstream.reject_call(upstream_id=call.upstream_id, status_code=call.sip_status)
        except UpstreamError as exc:
            logger.warning("Upstream reject of %s failed: %s", call.call_id, exc.code)
        return call
    if call.status != Call.Status.PENDING:
        return call
    try:
        accepted = await upstream.accept_call(upstream_id=call.upstream_id, session=decision.session.upstream)
    except UpstreamError as exc:
        await in_db_thread(call_fail)(call=call, error=exc)
        return call
    if not accepted:
        # 404: the caller hung up (CANCEL) before the answer.
        with contextlib.suppress(CallStateConflict):
            await in_db_thread(call_end)(call=call, reason=Call.EndReason.MISSED, actor=CallEvent.Actor.UPSTREAM)
        await in_db_thread(call_note_upstream_closed)(call=call, hung_up=False)
        return call
    answered = await in_db_thread(call_answer)(call=call, created=upstream.CreatedCall(upstream_id=call.upstream_id, sdp_answer=""))
    if not answered:
        # Ended (DELETE, admin) while OpenAI was answering: do not leave it running upstream.
        await hangup_upstream(call=call)
    return call


async def call_transfer(*, call: Call, target_uri: str, actor: CallEvent.Actor, data: dict[str, Any] | None = None) -> Call:
    """Transfer an active phone call (SIP REFER through OpenAI's /refer)."""
    if call.source != Call.Source.SIP or call.status != Call.Status.ACTIVE or not call.upstream_id:
        raise CallStateConflict(
            _("Only an active phone call can be transferred."),
            details={"call_id": call.call_id, "status": call.status, "source": call.source},
        )
    if not await upstream.refer_call(upstream_id=call.upstream_id, target_uri=target_uri):
        raise CallStateConflict(_("The call has already ended upstream."), details={"call_id": call.call_id})
    if not await in_db_thread(call_note_transfer)(call=call, target_uri=target_uri, actor=actor, data=data):
        raise CallStateConflict(_("The call ended during the transfer."), details={"call_id": call.call_id})
    return call


# --- personal data: retention purge and erasure (docs/privacy.md) ---------------------------

# What each kind of personal data is, as purged: the columns its marker replaces, and the events
# whose content it is. The call itself, its statuses, times, usage and cost stay.
PURGE_KINDS = ("sdp", "session", "transcripts", "caller_numbers", "events")
# What was said, and when: transcripts, the items and responses that carry them, speech turns.
SPEECH_EVENTS = (
    *selectors.TRANSCRIPT_EVENTS,
    "conversation.item.input_audio_transcription.failed",
    "response.output_audio_transcript.done",
    "response.output_text.done",
    "response.done",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
)
# Our own events that carry phone numbers.
NUMBER_EVENTS = ("call.incoming", "call.transferred")
NUMBER_KEYS = ("caller", "called", "target_uri")


def purge_marker(at: datetime) -> str:
    return f"[purged {at.date().isoformat()}]"


def _purged_columns(kind: str, marker: str) -> dict[str, Any]:
    """The call's columns of one kind, replaced by the marker (left empty where they were empty)."""

    def text(name: str) -> Any:
        return Case(When(**{name: ""}, then=Value("")), default=Value(marker))

    if kind == "sdp":
        return {"sdp_offer": text("sdp_offer"), "sdp_answer": text("sdp_answer")}
    if kind == "session":
        return {"instructions": text("instructions"), "session_requested": {"purged": marker}, "session_upstream": {"purged": marker}}
    if kind == "caller_numbers":
        return {
            "sip_caller": text("sip_caller"),
            "sip_called": text("sip_called"),
            "transferred_to": text("transferred_to"),
            "sip_headers": [],
        }
    return {}


def _purged_event(event: CallEvent, marker: str) -> dict[str, Any]:
    """An upstream event's content replaced by the marker; a response keeps its usage (the call's
    cost is summed from it) and status."""
    data: dict[str, Any] = {"purged": marker}
    if event.event_type == "response.done":
        response = event.data.get("response") or {}
        data["response"] = {k: response[k] for k in ("id", "status", "usage") if k in response}
    return data


def _purge_events(pks: list[int], kind: str, marker: str) -> None:
    """Replace the content of these calls' events of one kind."""
    if kind == "caller_numbers":
        events = CallEvent.objects.filter(call_id__in=pks, event_type__in=NUMBER_EVENTS)
        changed = []
        for event in events.only("pk", "data"):
            event.data = {k: (marker if k in NUMBER_KEYS and v else v) for k, v in event.data.items()}
            changed.append(event)
        if changed:
            CallEvent.objects.bulk_update(changed, ["data"])
        return
    if kind not in ("transcripts", "events"):
        return
    if kind == "transcripts":
        # The words said go with the transcript: a purged call is no longer found by them.
        CallWord.objects.filter(call_id__in=pks).delete()
    # Events received from upstream (they have its event id), not our own audit events.
    events = CallEvent.objects.filter(call_id__in=pks).exclude(upstream_event_id="")
    if kind == "transcripts":
        events = events.filter(event_type__in=SPEECH_EVENTS)
    # Read by the calls' index, then split here: a filter on the event type alone would let
    # SQLite's planner pick the event-type index and read every response of the history.
    found = list(events.only("pk", "event_type", "data"))
    responses = [e for e in found if e.event_type == "response.done"]
    # One UPDATE for the content with nothing to keep; responses one by one (their usage stays).
    CallEvent.objects.filter(pk__in=[e.pk for e in found if e.event_type != "response.done"]).update(data={"purged": marker})
    for event in responses:
        event.data = _purged_event(event, marker)
    if responses:
        CallEvent.objects.bulk_update(responses, ["data"])


# The kinds a webhook delivery's payload carries (the call as the API shows it: instructions, the
# caller's numbers; the transcript of call.transcript.completed): the payload goes with the first.
WEBHOOK_PAYLOAD_KINDS = ("session", "transcripts", "caller_numbers")


def _purge_webhook_payloads(pks: list[int], marker: str) -> None:
    """Replace the payloads of these calls' webhook deliveries by the marker, whatever their status
    (a delivery still being retried then carries the marker: the event happened, its data is no
    longer kept). The delivery log keeps what is not personal: type, time, call id, outcome."""
    messages = list(WebhookMessage.objects.filter(call_id__in=pks).only("pk", "payload"))
    for message in messages:
        old = message.payload if isinstance(message.payload, dict) else {}
        data = old.get("data")
        call_id = data.get("call_id") if isinstance(data, dict) else None
        message.payload = {
            **{k: old[k] for k in ("type", "timestamp") if k in old},
            "data": {**({"call_id": call_id} if call_id else {}), "purged": marker},
        }
    if messages:
        WebhookMessage.objects.bulk_update(messages, ["payload"])


def calls_purge_data(
    *,
    kinds_by_call: dict[int, list[str]],
    at: datetime,
    event_type: str = "call.data_purged",
    actor: CallEvent.Actor = CallEvent.Actor.SYSTEM,
    data: dict[str, Any] | None = None,
) -> dict[int, list[str]]:
    """Replace ended calls' data of the given kinds by a marker, each kind of each call once;
    returns the kinds purged, by call.

    One short transaction for the batch, a few statements per kind whatever the batch's size. The
    claim of each kind: the calls whose `<kind>_purged_at` is still empty and that have ended,
    read and updated inside the transaction (SQLite's IMMEDIATE transaction holds the write lock
    from its start; PostgreSQL locks the rows, skipping those another purge holds), so two purges
    racing, in any processes, purge a kind once, and a live call is never touched. One
    `call.data_purged` (or `call.data_erased`) event per call notes it. It is not counted and not
    pushed: statistics count the history as it happened, and a purge of a million calls must not
    flood the live feeds.
    """
    marker = purge_marker(at)
    purged: dict[int, list[str]] = {}
    with transaction.atomic():
        for kind in PURGE_KINDS:
            pks = [pk for pk, kinds in kinds_by_call.items() if kind in kinds]
            if not pks:
                continue
            claimable = Call.objects.filter(pk__in=pks, ended_at__isnull=False, **{f"{kind}_purged_at__isnull": True}).order_by()
            if connection.vendor == "postgresql":
                claimable = claimable.select_for_update(skip_locked=True)
            won = list(claimable.values_list("pk", flat=True))
            if not won:
                continue
            Call.objects.filter(pk__in=won).update(**{f"{kind}_purged_at": at}, **_purged_columns(kind, marker))
            _purge_events(won, kind, marker)
            if kind in WEBHOOK_PAYLOAD_KINDS:
                _purge_webhook_payloads(won, marker)
            for pk in won:
                purged.setdefault(pk, []).append(kind)
        CallEvent.objects.bulk_create(
            CallEvent(
                call_id=pk, event_type=event_type, actor=actor, data={"kinds": kinds, "marker": marker, **(data or {})}, created_at=at
            )
            for pk, kinds in purged.items()
        )
    return purged


def call_erase_data(*, call: Call, by: AccessActor, actor: CallEvent.Actor) -> list[str]:
    """Erase every kind of a call's personal data now (a person's request), audited: who, when,
    from where. Refused (CallStateConflict) while the call is live."""
    now = timezone.now()
    with transaction.atomic():
        status = Call.objects.values_list("status", flat=True).get(pk=call.pk)
        if status in Call.ENDABLE:
            raise CallStateConflict(
                _("The call is still in progress: end it before erasing its data."), details={"call_id": call.call_id, "status": status}
            )
        erased = calls_purge_data(
            kinds_by_call={call.pk: list(PURGE_KINDS)}, at=now, event_type="call.data_erased", actor=actor, data={"by": by.label}
        ).get(call.pk, [])
        _audit(AccessAudit.Action.CALL_DATA_ERASED, by, call_ref=call.call_id, at=now)
    return erased


def calls_delete_expired(*, pks: list[int], ended_before: datetime) -> int:
    """Delete whole calls ended before `ended_before`, with their events (retention of whole calls).

    The statistics counters keep counting them: they count the history, which happened whatever
    is kept of it (docs/privacy.md). Returns how many calls were deleted.
    """
    with transaction.atomic():
        expired = Call.objects.filter(pk__in=pks, ended_at__isnull=False, ended_at__lt=ended_before).order_by()
        if connection.vendor == "postgresql":
            # The calls' rows first, like the purge of kinds (calls, then their events), or the two
            # would deadlock; rows another purge holds are skipped, for the next pass.
            expired = expired.select_for_update(skip_locked=True)
        ids = list(expired.values_list("pk", flat=True))
        if not ids:
            return 0
        # The deliveries stay in the log (their call link emptied): their copies of the call go.
        _purge_webhook_payloads(ids, purge_marker(timezone.now()))
        for pk in ids:
            # One call's events at a time: each DELETE reads one range of event_call_idx.
            CallEvent.objects.filter(call_id=pk).delete()
        # Counted from the DELETE itself: another purge may have deleted some since they were read.
        _, deleted = Call.objects.filter(pk__in=ids).delete()
    return deleted.get(Call._meta.label, 0)
