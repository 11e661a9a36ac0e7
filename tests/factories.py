"""Calls in a given state, made through the services (never by writing rows behind their back)."""

from __future__ import annotations

from asgiref.sync import async_to_sync

from realtime import services
from realtime.models import Call, CallEvent
from realtime.sessions import parse_session


def make_call(offer: str, session: dict | None = None) -> Call:
    """An active call, answered by the embedded engine."""
    return async_to_sync(services.call_create)(offer=offer, session=parse_session(session or {}))


def end_call(call: Call, *, reason: Call.EndReason = Call.EndReason.API_HANGUP) -> Call:
    return async_to_sync(services.call_hangup)(call=call, reason=reason, actor=CallEvent.Actor.API)
