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
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from . import publish, upstream
from .exceptions import CallStateConflict, RealtimeError, UpstreamError
from .models import ApiKey, Call, CallEvent
from .sessions import SessionConfig

logger = logging.getLogger(__name__)


def _record(*, call: Call, event_type: str, actor: str, data: dict[str, Any], at: datetime, lifecycle: bool) -> CallEvent:
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
    *, offer: str, session: SessionConfig, source: str, actor: str, api_key: ApiKey | None = None, data: dict[str, Any] | None = None
) -> Call:
    """Record a new pending call before anything is sent upstream (the audit trail starts here).

    `api_key` is the key that owns the call (it alone may see and end it); `data` says who asked
    (`{"api_key": prefix}` or `{"staff_user": name}`) in the call.created event.
    """
    now = timezone.now()
    with transaction.atomic():
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
        )
        payload: dict[str, Any] = {"model": session.model, "voice": session.voice, "source": source, **(data or {})}
        if session.notes:
            # What we could not pass on as asked (a seed model alias, temperature): noted, not hidden.
            payload["adjustments"] = session.notes
        _record(call=call, event_type="call.created", actor=actor, data=payload, at=now, lifecycle=True)
    return call


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


def call_end(*, call: Call, reason: str, actor: str, data: dict[str, Any] | None = None) -> Call:
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


def call_note_hangup_failed(*, call: Call, error: RealtimeError) -> None:
    with transaction.atomic():
        data = {"upstream_id": call.upstream_id, "code": error.code, "message": error.message, "details": error.details}
        _record(call=call, event_type="upstream.hangup_failed", actor=CallEvent.Actor.SYSTEM, data=data, at=timezone.now(), lifecycle=False)


# --- async orchestration --------------------------------------------------------------------


async def call_create(
    *,
    offer: str,
    session: SessionConfig,
    source: str = Call.Source.WEBRTC,
    actor: str = CallEvent.Actor.API,
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
    if not await sync_to_async(call_answer)(call=call, created=created):
        # Ended (DELETE, admin) while OpenAI was answering: do not leave it running upstream.
        await sync_to_async(call.refresh_from_db)()
        call.upstream_id = created.upstream_id
        await hangup_upstream(call=call)
        raise CallStateConflict(_("The call was ended while it was being set up."), details={"call_id": call.call_id})
    return call


async def call_hangup(*, call: Call, reason: str, actor: str, data: dict[str, Any] | None = None) -> Call:
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
