"""The outbox: one `WebhookMessage` per subscribed endpoint, written in the call event's transaction.

A crash after the commit leaves the rows for a dispatcher to send; a rollback leaves neither the
event nor its rows. `realtime.services` calls `enqueue` for each lifecycle event it records.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from django.conf import settings
from django.db import connection, transaction

from .models import TEST_EVENT, EventType, WebhookEndpoint, WebhookMessage

if TYPE_CHECKING:
    from ..models import Call

# The call events an endpoint hears about (lifecycle transitions, under the same names).
SENT = frozenset(EventType.values) - {EventType.CALL_TRANSCRIPT_COMPLETED}


def payload(*, event_type: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """The body of a delivery, shaped like OpenAI's own webhooks: type, Unix timestamp, data."""
    return {"type": event_type, "timestamp": int(at.timestamp()), "data": data}


def call_data(call: Call) -> dict[str, Any]:
    """The call as `GET /api/realtime/calls/{id}` shows it, at the moment of the event."""
    from ..serializers import CallSerializer, represent

    return represent(CallSerializer, call)


def _window(at: datetime) -> datetime:
    return at + timedelta(hours=settings.REALTIME_WEBHOOK_RETRY_HOURS)


class Subscriber(NamedTuple):
    """An enabled endpoint, as a call event's deliveries need it."""

    pk: int
    events: list[str]


def _in_scope_where(with_key: bool) -> str:
    quote = connection.ops.quote_name
    scope = f"{quote('api_key_id')} IS NULL" + (f" OR {quote('api_key_id')} = %s" if with_key else "")
    return f"{quote('enabled')} AND ({scope})"


@functools.cache
def _in_scope_sql(vendor: str, with_key: bool) -> str:
    table, quote = WebhookEndpoint._meta.db_table, connection.ops.quote_name
    return f"SELECT {quote('id')}, {quote('events')} FROM {quote(table)} WHERE {_in_scope_where(with_key)}"


def in_scope_query(api_key_id: int | None) -> tuple[str, list[Any]]:
    """The read `in_scope` runs (also a part of a transition's one statement on PostgreSQL:
    realtime.statements.transition), with its parameters; its rows go to `subscribers`."""
    params = [] if api_key_id is None else [api_key_id]
    return _in_scope_sql(connection.vendor, bool(params)), params


def wanted(event_type: str) -> tuple[str, ...]:
    """The event types whose endpoints `enqueue` writes deliveries for, for an event of this type."""
    if event_type not in SENT:
        return ()
    return (event_type, EventType.CALL_TRANSCRIPT_COMPLETED) if event_type == EventType.CALL_ENDED else (event_type,)


@functools.cache
def _wanted_sql(vendor: str, with_key: bool, types: int) -> str:
    table, quote = WebhookEndpoint._meta.db_table, connection.ops.quote_name
    wants = " OR ".join([f"{quote('events')} ? %s"] * types)
    return f"SELECT FROM {quote(table)} WHERE {_in_scope_where(with_key)} AND ({wants})"


def wanted_query(api_key_id: int | None, types: tuple[str, ...]) -> tuple[str, list[Any]]:
    """PostgreSQL: the endpoints in scope of a call (`in_scope`) that want any of `types` (a row
    each), with its parameters."""
    params: list[Any] = [] if api_key_id is None else [api_key_id]
    return _wanted_sql(connection.vendor, bool(params), len(types)), [*params, *types]


def subscribers(rows: list[tuple[int, Any]]) -> list[Subscriber]:
    """Endpoints from the rows of `in_scope_query` (id, events as the database returns them)."""
    events = WebhookEndpoint._meta.get_field("events")
    return [Subscriber(pk, events.from_db_value(value, events.cached_col, connection)) for pk, value in rows]


def in_scope(call: Call) -> list[Subscriber]:
    """Enabled endpoints that may hear about this call: unscoped ones, and the call's key's.

    Read at every call event, in its transaction: endpoints change at any time, in any process,
    and each event is owed to the endpoints enabled when it commits, so nothing is cached. One
    small indexed read, in SQL written once: building it through the ORM cost ten times what
    running it costs, at every transition.
    """
    sql, params = in_scope_query(call.api_key_id)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return subscribers(cursor.fetchall())


def enqueue(*, call: Call, event_type: str, at: datetime, endpoints: list[Subscriber] | None = None) -> int:
    """Write the deliveries of one call event (inside its transaction); returns how many.
    `endpoints`: `in_scope(call)` if the caller read it already, in the same transaction.

    A call that ends with a transcript also gets `call.transcript.completed`, with its transcript.
    """
    if event_type not in SENT:
        return 0
    # Endpoints are few (a handful per key): the event filter is cheaper here than in JSON SQL.
    if endpoints is None:
        endpoints = in_scope(call)
    written = _write(call=call, event_type=event_type, at=at, endpoints=[e for e in endpoints if event_type in e.events])
    transcript_wanted = [e for e in endpoints if EventType.CALL_TRANSCRIPT_COMPLETED in e.events]
    if event_type == EventType.CALL_ENDED and transcript_wanted:
        from ..models import Call
        from ..selectors import call_transcript

        # Read from the row: a monitor may have stored the first transcript since the caller loaded the call.
        if Call.objects.filter(pk=call.pk, has_transcript=True).exists():
            call.has_transcript = True
            extra = {"transcript": call_transcript(call=call)}
            written += _write(call=call, event_type=EventType.CALL_TRANSCRIPT_COMPLETED, at=at, endpoints=transcript_wanted, extra=extra)
    return written


def _write(*, call: Call, event_type: str, at: datetime, endpoints: list[Subscriber], extra: dict[str, Any] | None = None) -> int:
    if not endpoints:
        return 0
    body = payload(event_type=event_type, at=at, data={**call_data(call), **(extra or {})})
    rows = [
        WebhookMessage(
            endpoint_id=e.pk,
            call_id=call.pk,
            event_type=event_type,
            payload=body,
            created_at=at,
            next_attempt_at=at,
            give_up_at=_window(at),
        )
        for e in endpoints
    ]
    WebhookMessage.objects.bulk_create(rows)
    _wake_after_commit()
    return len(rows)


def enqueue_test(*, endpoint: WebhookEndpoint, at: datetime) -> WebhookMessage:
    """A `webhook.test` delivery to one endpoint ("send a test event")."""
    data = {"webhook_id": endpoint.pk, "url": endpoint.url, "events": endpoint.events}
    message = WebhookMessage.objects.create(
        endpoint=endpoint,
        event_type=TEST_EVENT,
        payload=payload(event_type=TEST_EVENT, at=at, data=data),
        created_at=at,
        next_attempt_at=at,
        give_up_at=_window(at),
    )
    _wake_after_commit()
    return message


def resend(*, message: WebhookMessage, at: datetime) -> bool:
    """Send a delivered or failed delivery again ("send again"), under the same `webhook-id`
    (receivers dedupe on it), with a new retry window. False for one still pending: it is being
    sent or retried already. A conditional UPDATE, so two clicks queue it once."""
    done = WebhookMessage.objects.filter(pk=message.pk).exclude(status=WebhookMessage.Status.PENDING)
    changed = done.update(status=WebhookMessage.Status.PENDING, next_attempt_at=at, give_up_at=_window(at))
    if changed:
        message.refresh_from_db()
        _wake_after_commit()
    return bool(changed)


def resume(*, endpoint: WebhookEndpoint, at: datetime) -> int:
    """An endpoint enabled again: its pending deliveries (parked while it was disabled) are due now."""
    pending = WebhookMessage.objects.filter(endpoint=endpoint, status=WebhookMessage.Status.PENDING, next_attempt_at__gt=at)
    count = pending.update(next_attempt_at=at)
    if count:
        _wake_after_commit()
    return count


def _wake_after_commit() -> None:
    from . import dispatcher

    transaction.on_commit(dispatcher.wake)
