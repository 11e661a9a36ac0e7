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


def measured(call: Call, *, turns: int, latency_ms: tuple[int, int, int], interruptions: int, talk_seconds: tuple[float, float]) -> None:
    """Quality figures on a call as the quality monitor stores them (`Call.metrics` and its two columns)."""
    p50, p95, slowest = latency_ms
    metrics = {
        "turns": turns,
        "latency_ms": {"p50": p50, "p95": p95, "max": slowest},
        "interruptions": interruptions,
        "talk_seconds": {"caller": talk_seconds[0], "assistant": talk_seconds[1]},
    }
    Call.objects.filter(pk=call.pk).update(metrics=metrics, latency_p95_ms=p95, latency_max_ms=slowest)
