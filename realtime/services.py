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

import contextlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _

from . import pricing, publish, selectors, upstream
from .auth.lockout import client_address
from .exceptions import CallStateConflict, RealtimeError, TooManyCalls, UpstreamError
from .models import API_KEY_PREFIX, API_KEY_VISIBLE_CHARS, AccessAudit, ApiKey, Call, CallEvent, hash_api_key
from .sessions import SessionConfig

logger = logging.getLogger(__name__)

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
# Any fixed number: the PostgreSQL advisory lock that serialises the concurrency check.
_CAPACITY_LOCK = 0x1A905E


def _record(*, call: Call, event_type: str, actor: CallEvent.Actor, data: dict[str, Any], at: datetime, lifecycle: bool) -> CallEvent:
    event = CallEvent.objects.create(call=call, event_type=event_type, actor=actor, data=data, created_at=at)
    publish.event_recorded(event=event, call=call, lifecycle=lifecycle)
    return event


def _transition(*, call: Call, allowed: tuple[str, ...], changes: dict[str, Any]) -> bool:
    """Apply `changes` only if the call is still in one of `allowed`; refresh `call` if it was."""
    updated = Call.objects.filter(pk=call.pk, status__in=allowed).update(**changes)
    if updated:
        call.refresh_from_db()
    return bool(updated)


# --- sync transitions -----------------------------------------------------------------------


def call_open(
    *,
    offer: str,
    session: SessionConfig,
    source: Call.Source,
    actor: CallEvent.Actor,
    api_key: ApiKey | None = None,
    data: dict[str, Any] | None = None,
) -> Call:
    """Record a new pending call before anything is sent upstream (the audit trail starts here).

    `api_key` is the key that owns the call (it alone may see and end it); `data` says who asked
    (`{"api_key": prefix}` or `{"staff_user": name}`) in the call.created event.
    """
    now = timezone.now()
    with transaction.atomic():
        _check_capacity(api_key=api_key)
        call = Call.objects.create(
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
        _record(call=call, event_type="call.created", actor=actor, data=payload, at=now, lifecycle=True)
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
    if connection.vendor == "postgresql":
        # SQLite's IMMEDIATE transactions already hold the write lock from BEGIN; PostgreSQL needs
        # a lock of its own so two creates cannot both count the same free place.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CAPACITY_LOCK])
    live = Call.objects.filter(status__in=Call.ENDABLE)
    total = live.count() if limit else 0
    if limit and total >= limit:
        raise TooManyCalls(_("Too many calls in progress (at most %(n)d); try again later.") % {"n": limit}, details={"limit": limit})
    if api_key is None:
        return
    mine = live.filter(api_key=api_key).count()
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
    now = timezone.now()
    with transaction.atomic():
        changes = {"status": Call.Status.ACTIVE, "upstream_id": created.upstream_id, "sdp_answer": created.sdp_answer, "answered_at": now}
        if not _transition(call=call, allowed=(Call.Status.PENDING,), changes=changes):
            return False
        _record(
            call=call,
            event_type="call.answered",
            actor=CallEvent.Actor.UPSTREAM,
            data={"upstream_id": created.upstream_id},
            at=now,
            lifecycle=True,
        )
    return True


def call_fail(*, call: Call, error: RealtimeError) -> bool:
    """pending -> failed: OpenAI refused or never answered. The call never became active."""
    now = timezone.now()
    with transaction.atomic():
        changes = {
            "status": Call.Status.FAILED,
            "ended_at": now,
            "end_reason": Call.EndReason.UPSTREAM_ERROR,
            "error_message": error.message[:2000],
        }
        if not _transition(call=call, allowed=(Call.Status.PENDING,), changes=changes):
            return False
        data = {"code": error.code, "message": error.message, "details": error.details}
        _record(call=call, event_type="call.failed", actor=CallEvent.Actor.UPSTREAM, data=data, at=now, lifecycle=True)
    return True


def call_end(*, call: Call, reason: Call.EndReason, actor: CallEvent.Actor, data: dict[str, Any] | None = None) -> Call:
    """pending|active -> ended, with a reason. Raises CallStateConflict if it had already ended."""
    now = timezone.now()
    duration = max((now - call.created_at).total_seconds(), 0.0)
    with transaction.atomic():
        changes = {"status": Call.Status.ENDED, "ended_at": now, "end_reason": reason, "duration_seconds": duration}
        if not _transition(call=call, allowed=Call.ENDABLE, changes=changes):
            call.refresh_from_db()
            raise CallStateConflict(
                _("The call is already %(status)s.") % {"status": call.get_status_display().lower()},
                details={"call_id": call.call_id, "status": call.status},
            )
        payload = {"reason": reason, "duration_seconds": round(duration), **(data or {})}
        _record(call=call, event_type="call.ended", actor=actor, data=payload, at=now, lifecycle=True)
    return call


def call_note_upstream_closed(*, call: Call, hung_up: bool) -> None:
    """OpenAI confirmed the hangup (or no longer knew the call): nothing runs upstream any more."""
    now = timezone.now()
    with transaction.atomic():
        if Call.objects.filter(pk=call.pk, upstream_closed_at__isnull=True).update(upstream_closed_at=now):
            call.upstream_closed_at = now
            data = {"upstream_id": call.upstream_id, "already_gone": not hung_up}
            _record(call=call, event_type="upstream.hangup", actor=CallEvent.Actor.SYSTEM, data=data, at=now, lifecycle=False)


def call_note_upstream_id(*, call: Call, upstream_id: str) -> None:
    """Keep the upstream id of a call ended during its setup, so its hangup can be retried."""
    Call.objects.filter(pk=call.pk, upstream_id="").update(upstream_id=upstream_id)
    call.refresh_from_db()


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
) -> Call:
    """Record the call, ask OpenAI for an answer, and activate it; a refusal leaves it `failed`."""
    call = await sync_to_async(call_open)(offer=offer, session=session, source=source, actor=actor, api_key=api_key, data=data)
    try:
        created = await upstream.create_call(sdp=offer, session=session.upstream)
    except UpstreamError as exc:
        await sync_to_async(call_fail)(call=call, error=exc)
        raise
    try:
        answered = await sync_to_async(call_answer)(call=call, created=created)
    except Exception:
        # The answer could not be recorded (the database failed): the caller never gets it, so the
        # call would run upstream unowned. Hang it up now; the sweeper ends the pending row later.
        logger.exception("Could not record the answer of %s; hanging it up upstream", call.call_id)
        with contextlib.suppress(UpstreamError):
            await upstream.hangup_call(upstream_id=created.upstream_id)
        raise
    if not answered:
        # Ended (DELETE, admin) while OpenAI was answering: do not leave it running upstream.
        await sync_to_async(call_note_upstream_id)(call=call, upstream_id=created.upstream_id)
        await hangup_upstream(call=call)
        raise CallStateConflict(_("The call was ended while it was being set up."), details={"call_id": call.call_id})
    return call


async def call_hangup(*, call: Call, reason: Call.EndReason, actor: CallEvent.Actor, data: dict[str, Any] | None = None) -> Call:
    """End the call here (exactly once), then hang it up upstream; the winner alone hangs up."""
    call = await sync_to_async(call_end)(call=call, reason=reason, actor=actor, data=data)
    if call.upstream_id:
        await hangup_upstream(call=call)
    return call


async def hangup_upstream(*, call: Call) -> bool:
    """Ask OpenAI to hang up; record the outcome. True once nothing runs upstream any more."""
    try:
        hung_up = await upstream.hangup_call(upstream_id=call.upstream_id)
    except UpstreamError as exc:
        logger.warning("Upstream hangup of %s failed: %s", call.call_id, exc.code)
        await sync_to_async(call_note_hangup_failed)(call=call, error=exc)
        return False
    await sync_to_async(call_note_upstream_closed)(call=call, hung_up=hung_up)
    return True


# --- sideband monitoring ----------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamEvent:
    """One server event received on a call's sideband, as a monitor hands it over for storage."""

    event_type: str
    event_id: str
    data: dict[str, Any]
    received_at: datetime


def call_record_events(*, call: Call, events: list[UpstreamEvent]) -> int:
    """Store a batch of upstream events in one transaction; sum their usage and cost onto the call.

    Idempotent per upstream `event_id`: events already stored (two monitors overlapping during a
    takeover) are skipped, so each is recorded once. Returns how many were stored. One push after
    commit carries the whole batch.
    """
    if not events:
        return 0
    with transaction.atomic():
        ids = [e.event_id for e in events if e.event_id]
        seen = set(CallEvent.objects.filter(call_id=call.pk, upstream_event_id__in=ids).values_list("upstream_event_id", flat=True))
        fresh: list[UpstreamEvent] = []
        for event in events:
            if event.event_id and event.event_id in seen:
                continue
            seen.add(event.event_id)
            fresh.append(event)
        if not fresh:
            return 0
        rows = CallEvent.objects.bulk_create(
            [
                CallEvent(
                    call_id=call.pk,
                    event_type=e.event_type[:80],
                    actor=CallEvent.Actor.UPSTREAM,
                    data=e.data,
                    created_at=e.received_at,
                    upstream_event_id=e.event_id[:64],
                )
                for e in fresh
            ]
        )
        _account(call=call, events=fresh)
        publish.events_recorded(events=rows, call=call)
    return len(rows)


def _account(*, call: Call, events: list[UpstreamEvent]) -> None:
    """Add the batch's usage to the call (one UPDATE), and note that a transcript exists."""
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
    row = Call.objects.select_for_update().only("pk", "usage", "cost_usd", "upstream_model", "session_upstream").get(pk=call.pk)
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
    changes: dict[str, Any] = {"usage": usage, "cost_usd": cost}
    changes["input_tokens"] = usage.get("input_tokens", 0)
    changes["output_tokens"] = usage.get("output_tokens", 0)
    if transcript:
        changes["has_transcript"] = True
    Call.objects.filter(pk=call.pk).update(**changes)
    for name, value in changes.items():
        setattr(call, name, value)


@dataclass(frozen=True)
class Claimed:
    """A call a monitor now holds, and who held it before ("" for a new call or a clean release).

    A previous holder means its process died (its lease ran out): the call is being recovered.
    """

    call: Call
    previous_owner: str


def _claim(*, claimable: Q, held_by: str, changes: dict[str, Any], limit: int, order_by: tuple[str, ...] = ()) -> list[tuple[Call, Any]]:
    """Claim up to `limit` calls matching `claimable`, each with the `held_by` value it had.

    Each claim is a conditional UPDATE on the value of `held_by` seen by the SELECT: if another
    process claimed the call since, this updates nothing and the call is not ours.
    """
    candidates = list(Call.objects.filter(claimable).order_by(*order_by).values_list("pk", held_by)[:limit])
    claimed: list[tuple[Call, Any]] = []
    for pk, seen in candidates:
        with transaction.atomic():
            won = Call.objects.filter(claimable, pk=pk, **{held_by: seen}).update(**changes)
        if won:
            claimed.append((Call.objects.get(pk=pk), seen))
    return claimed


def monitor_claim(*, owner: str, lease_seconds: float, limit: int) -> list[Claimed]:
    """Claim up to `limit` active calls that no live monitor holds (free or expired lease)."""
    if limit <= 0:
        return []
    now = timezone.now()
    claimable = Q(status=Call.Status.ACTIVE) & ~Q(upstream_id="") & (Q(monitor_lease_until__isnull=True) | Q(monitor_lease_until__lt=now))
    changes = {"monitor_owner": owner, "monitor_lease_until": now + timedelta(seconds=lease_seconds)}
    claimed = _claim(claimable=claimable, held_by="monitor_owner", changes=changes, limit=limit, order_by=("monitor_lease_until", "id"))
    return [Claimed(call, previous) for call, previous in claimed]


def hangup_retry_claim(*, now: datetime, grace_seconds: float, claim_seconds: float, limit: int) -> list[Call]:
    """Ended calls whose upstream hangup is unconfirmed and due again, claimed for one retry.

    Due: past `hangup_retry_at`, or never tried by a sweeper and ended more than `grace_seconds`
    ago (whoever ended it is still hanging up before that). A claim moves `hangup_retry_at`
    `claim_seconds` on, so it is not claimed again meanwhile, even if its sweeper dies mid-way.
    """
    unconfirmed = Q(status__in=(Call.Status.ENDED, Call.Status.FAILED), upstream_closed_at__isnull=True) & ~Q(upstream_id="")
    due = Q(hangup_retry_at__lte=now) | Q(hangup_retry_at__isnull=True, ended_at__lt=now - timedelta(seconds=grace_seconds))
    changes = {"hangup_retry_at": now + timedelta(seconds=claim_seconds)}
    return [call for call, _seen in _claim(claimable=unconfirmed & due, held_by="hangup_retry_at", changes=changes, limit=limit)]


def monitor_renew(*, owner: str, lease_seconds: float, call_ids: list[int]) -> set[int]:
    """Extend this monitor's leases on the calls it watches; returns the ones it still holds."""
    if not call_ids:
        return set()
    now = timezone.now()
    with transaction.atomic():
        held = Call.objects.filter(pk__in=call_ids, monitor_owner=owner, status=Call.Status.ACTIVE)
        held.update(monitor_lease_until=now + timedelta(seconds=lease_seconds))
        return set(held.values_list("pk", flat=True))


def monitor_release(*, owner: str, call_ids: list[int]) -> None:
    """Give calls back at a clean shutdown, so another monitor takes them without waiting."""
    if call_ids:
        Call.objects.filter(pk__in=call_ids, monitor_owner=owner).update(monitor_owner="", monitor_lease_until=None)


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
