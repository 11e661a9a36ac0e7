"""Pushes to WebSocket subscribers. The only module that calls the channel layer's `group_send`.

Pushes are scheduled with `transaction.on_commit`, so a rolled-back change pushes nothing, and
they carry the same serializers' output as the REST API. Groups:

- `realtime.calls`: every call's lifecycle change, with a fresh stats snapshot;
- `realtime.call.<call_id>`: every event recorded for that call.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from . import selectors
from .models import Call, CallEvent
from .serializers import CallEventSerializer, CallSerializer

logger = logging.getLogger(__name__)

CALLS_GROUP = "realtime.calls"


def call_group(call_id: str) -> str:
    return f"realtime.call.{call_id}"


def event_recorded(*, event: CallEvent, call: Call, lifecycle: bool) -> None:
    """Schedule, for after commit, the push of one recorded event (and of the call if it changed)."""
    # Serialise now, inside the transaction, and round-trip through JSON so that a payload that
    # cannot be sent fails here rather than in an on-commit hook (Zulip's habit).
    event_payload = json.loads(json.dumps(CallEventSerializer(event).data))
    call_payload = json.loads(json.dumps(CallSerializer(call).data)) if lifecycle else None
    transaction.on_commit(lambda: send(call_id=call.call_id, event=event_payload, call=call_payload))


def events_recorded(*, events: list[CallEvent], call: Call) -> None:
    """Schedule, for after commit, the push of a batch of upstream events to the call's subscribers."""
    if not events:
        return
    # Built by hand rather than through CallEventSerializer: a monitor stores thousands of events a
    # second and the serializer would dominate. Same fields, same values.
    payloads = [
        {
            "id": event.pk,
            "call_id": call.call_id,
            "event_type": event.event_type,
            "timestamp": int(event.created_at.timestamp()),
            "event_data": event.data,
            "actor": event.actor,
        }
        for event in events
    ]
    # No JSON round-trip check here (unlike event_recorded): these payloads were parsed from JSON
    # a moment ago and hold nothing else, and at thousands of events a second the check would
    # cost as much as storing them.
    transaction.on_commit(lambda: send_batch(call_id=call.call_id, events=payloads))


def send_batch(*, call_id: str, events: list[dict[str, Any]]) -> None:
    """Deliver a batch of a call's events in order, in one hop to the channel layer's loop."""
    layer = get_channel_layer()
    if layer is None:
        return
    group = call_group(call_id)

    async def deliver() -> None:
        for event in events:
            await layer.group_send(group, {"type": "call.event", "event": event})

    try:
        async_to_sync(deliver)()
    except Exception:
        logger.exception("Push to %s failed", group)


def send(*, call_id: str, event: dict[str, Any], call: dict[str, Any] | None) -> None:
    """Deliver one recorded event: to the call's subscribers, and to the list's if the call changed."""
    layer = get_channel_layer()
    if layer is None:
        return
    messages = [(call_group(call_id), {"type": "call.event", "event": event})]
    if call is not None:
        messages.append((CALLS_GROUP, {"type": "call.changed", "event": event, "call": call, "stats": selectors.stats()}))
    for group, message in messages:
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:
            # A push is a notification; the committed row is the truth and clients re-fetch.
            logger.exception("Push to %s failed", group)
