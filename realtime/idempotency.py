"""Idempotent create: an `Idempotency-Key` header makes a retried POST return the first response.

The first request with a key reserves it (a row, unique per scope and key) before anything is
sent upstream; a concurrent or later request with the same key finds the row: the same body gets
the stored response once there is one (409 while the first is still running), another body is a
409. Responses that left a call behind (201, or an upstream error with its `failed` call) are
stored; a request refused before any call was recorded (the concurrency limit, say) releases
the key, so retrying it may succeed. Keys are kept for REALTIME_IDEMPOTENCY_TTL_SECONDS; the
sweeper forgets older ones.

`call_create` is the service the API calls: it creates the call through `services.call_create`
and does the reserving, storing and releasing around it.

A client that hangs up mid-create cancels the view, but never the create: it runs in a task of
its own, shielded, to the end. With a key, the outcome is stored as usual, so the retry replays it
(the key is never released while an upstream call may be starting, so it never starts two).
Without a key nobody can ever receive the answer: the call is hung up once it is set up, rather
than left running upstream unowned until the engine gives up on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from . import services
from .auth.principals import Principal
from .exceptions import IdempotencyConflict, InvalidInput, RealtimeError, TooManyCalls, error_body
from .models import Call, CallEvent, IdempotencyKey
from .serializers import created_body
from .sessions import SessionConfig

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Answer:
    """A response to send: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


async def call_create(
    *, principal: Principal | Callable[[], Principal], offer: str, session: SessionConfig, idempotency_key: str | None
) -> Answer:
    """Create a call for `principal` (the API's POST), at most once per Idempotency-Key.

    `principal` may be the request's checks instead: they run on the database thread in the trip of
    the create's first database work (the key's reservation, or the call's recording), and return
    the principal or refuse the request.

    Returns the response to send: the new call (201), or the first request's stored response with
    `Idempotent-Replayed: true`. Errors propagate, after the key was stored or released as the
    module docstring says.
    """
    if idempotency_key is not None:
        idempotency_key = clean_key(idempotency_key)
    # The view's cancellation (the client went away) must not cancel a create half-way.
    task = asyncio.ensure_future(_create_once(principal, offer, session, idempotency_key))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_hang_up_unclaimed if idempotency_key is None else _retrieve)
        raise


def _retrieve(task: asyncio.Future[Answer]) -> None:
    # With a key the outcome is stored for the retry; an error was recorded with it. Retrieved
    # here so that nobody waiting on it is not reported as a lost exception.
    if not task.cancelled():
        task.exception()


def _hang_up_unclaimed(task: asyncio.Future[Answer]) -> None:
    if task.cancelled() or task.exception() is not None:
        return  # no call is running: it failed (and was recorded so) or was never created
    call_id = task.result().body["call_id"]
    # Held by the set below until done, so the hangup is not collected half-way.
    hangup = asyncio.ensure_future(_hang_up(call_id))
    _hangups.add(hangup)
    hangup.add_done_callback(_hangups.discard)


_hangups: set[asyncio.Future[None]] = set()


async def _hang_up(call_id: str) -> None:
    call = await Call.objects.aget(call_id=call_id)
    logger.info("Client of %s went away during the create; hanging it up", call_id)
    with contextlib.suppress(RealtimeError):
        await services.call_hangup(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.SYSTEM, data={"client_gone": True})


async def _create_once(principal: Principal | Callable[[], Principal], offer: str, session: SessionConfig, key: str | None) -> Answer:
    if key is None:
        return await _create(principal, offer, session)
    digest = request_hash(sdp=offer, session=session.requested)
    # Keys, like everything of a create, are read and written on the database thread (no hop onto
    # the request's own thread, with its request signals).
    principal, replay = await services.in_db_thread(_checked_reserve)(principal, key=key, digest=digest)
    scope = scope_for(principal)
    if replay is not None:
        return Answer(replay.status, replay.body, {**replay.headers, "Idempotent-Replayed": "true"})
    try:
        created = await _create(principal, offer, session)
    except TooManyCalls:
        # Refused before any call was recorded: the key stays free, so a retry may succeed.
        await services.in_db_thread(release)(scope=scope, key=key)
        raise
    except RealtimeError as exc:
        # A call was recorded (and failed): retrying must not start another one.
        body = error_body(exc.code, exc.message, exc.details)
        await services.in_db_thread(complete)(scope=scope, key=key, status=exc.status, body=body, headers=exc.headers)
        raise
    except BaseException:
        await services.in_db_thread(release)(scope=scope, key=key)
        raise
    await services.in_db_thread(complete)(scope=scope, key=key, status=created.status, body=created.body)
    return created


async def _create(principal: Principal | Callable[[], Principal], offer: str, session: SessionConfig) -> Answer:
    if isinstance(principal, Principal):
        call = await services.call_create(offer=offer, session=session, **_owner(principal))
    else:
        checks = principal
        call = await services.call_create(offer=offer, session=session, admit=lambda: _owner(checks()))
    return Answer(201, created_body(call, warnings=session.warnings), {})


def _owner(principal: Principal) -> dict[str, Any]:
    """Who a call `principal` creates is for, as services.call_create takes it."""
    return {"actor": principal.actor, "api_key": principal.api_key, "data": principal.audit()}


def scope_for(principal: Principal) -> str:
    """Keys are per client: two integrators may choose the same key without meeting."""
    if principal.api_key is not None:
        return f"key:{principal.api_key.pk}"
    if principal.kind == "staff":
        return f"staff:{principal.username}"[:64]
    return "local"


def request_hash(*, sdp: str, session: Any) -> str:
    canonical = json.dumps({"sdp": sdp, "session": session}, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def clean_key(raw: str) -> str:
    key = raw.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise InvalidInput(HEADER, _("must be 1 to %(n)d printable ASCII characters.") % {"n": MAX_KEY_LENGTH})
    return key


def _checked_reserve(principal: Principal | Callable[[], Principal], *, key: str, digest: str) -> tuple[Principal, Answer | None]:
    """The principal (the request's checks made first, if they were left to this trip) and `reserve`'s answer."""
    checked = principal if isinstance(principal, Principal) else principal()
    return checked, reserve(scope=scope_for(checked), key=key, digest=digest)


def reserve(*, scope: str, key: str, digest: str) -> Answer | None:
    """Reserve `key` for this request (None), or return the first request's stored response.

    Raises IdempotencyConflict for another body, or while the first request is still running.
    """
    now = timezone.now()
    expired = now - timedelta(seconds=settings.REALTIME_IDEMPOTENCY_TTL_SECONDS)
    try:
        with transaction.atomic():
            # A key past its time to live is forgotten, even if the sweeper has not come by yet.
            IdempotencyKey.objects.filter(scope=scope, key=key, created_at__lt=expired).delete()
            IdempotencyKey.objects.create(scope=scope, key=key, request_hash=digest, created_at=now)
        return None
    except IntegrityError:
        pass
    row = IdempotencyKey.objects.filter(scope=scope, key=key).first()
    if row is None:
        # Released by its first request between our insert and this read: let the client retry.
        raise IdempotencyConflict(_("A request with this Idempotency-Key is in progress; retry later."), details={"key": key})
    if row.request_hash != digest:
        raise IdempotencyConflict(
            _("This Idempotency-Key was already used with a different request."), details={"key": key, "reason": "different_request"}
        )
    if row.response_status is None:
        raise IdempotencyConflict(
            _("A request with this Idempotency-Key is in progress; retry later."), details={"key": key, "reason": "in_progress"}
        )
    return Answer(status=row.response_status, body=row.response_body or {}, headers=dict(row.response_headers))


def complete(*, scope: str, key: str, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    IdempotencyKey.objects.filter(scope=scope, key=key, response_status__isnull=True).update(
        response_status=status, response_body=body, response_headers=headers or {}
    )


def release(*, scope: str, key: str) -> None:
    IdempotencyKey.objects.filter(scope=scope, key=key, response_status__isnull=True).delete()


def forget_expired(*, now: datetime) -> int:
    """Forget keys past their time to live (the sweeper's job); returns how many."""
    cutoff = now - timedelta(seconds=settings.REALTIME_IDEMPOTENCY_TTL_SECONDS)
    deleted, _per_model = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
