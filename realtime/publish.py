"""Pushes to WebSocket subscribers. The only module that calls the channel layer's `group_send`.

Pushes are scheduled with `transaction.on_commit`, so a rolled-back change pushes nothing, and
they carry the same serializers' output as the REST API. Groups and messages:

- `realtime.call.<call_id>`: `call.event` for every event recorded for that call;
- `realtime.calls`: `call.changed` (the event and the call after it) for every lifecycle
  transition, `call.metrics` (also to the call's group) when its quality figures change, and `stats.changed` with a fresh statistics snapshot shortly after a burst of them;
- `realtime.api_key.<id>`: `access.revoked` when that key is revoked or expires, so every socket
  the key opened, in every process, closes (realtime.consumers).

Statistics are read from counters (`realtime.counters`), a few rows whatever the history, but a
burst of transitions still needs one snapshot, not one each: a snapshot is computed only while
someone subscribes to the list feed, at most one is pending per process, and it is sent
`STATS_PUSH_DELAY` seconds after the transition that scheduled it, so after the last of a burst.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import json
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

from . import selectors
from .models import Call, CallEvent
from .serializers import CallSerializer, represent

logger = logging.getLogger(__name__)
T = TypeVar("T")

CALLS_GROUP = "realtime.calls"
STATS_PUSH_DELAY = 0.2

# The loop a statistics snapshot is scheduled on, if one is (at most one per process).
_stats_lock = threading.Lock()
_stats_pending: asyncio.AbstractEventLoop | None = None


def call_group(call_id: str) -> str:
    return f"realtime.call.{call_id}"


# Why a key's sockets were closed (the `access.revoked` message before the close, code 4401).
KEY_REVOKED = "api_key_revoked"
KEY_EXPIRED = "api_key_expired"


def api_key_group(api_key_id: int) -> str:
    return f"realtime.api_key.{api_key_id}"


def api_keys_closed(*, api_key_ids: list[int], reason: str) -> None:
    """Schedule, for after commit, the closing of every socket these keys opened (`reason`:
    KEY_REVOKED or KEY_EXPIRED)."""
    if api_key_ids:
        transaction.on_commit(lambda: _send_to_keys(api_key_ids, reason))


def _send_to_keys(api_key_ids: list[int], reason: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return

    async def deliver() -> None:
        for api_key_id in api_key_ids:
            await layer.group_send(api_key_group(api_key_id), {"type": "access.revoked", "reason": reason})

    try:
        async_to_sync(deliver)()
    except Exception:
        # The sockets' own expiry timers and the next handshake's check still refuse the key.
        logger.exception("Closing the sockets of keys %s failed", api_key_ids)


def event_recorded(*, event: CallEvent, call: Call, lifecycle: bool) -> None:
    """Schedule, for after commit, the push of one recorded event (and of the call if it changed).

    What the push says is fixed here: the event's fields, and the call as this transition left it
    (`as_of_now`). It is rendered when delivered (`rendered`), after the commit: serialising the
    call inside the transaction held SQLite's write lock, and the request waiting on it, about
    80 µs longer at every transition (two per create; docs/benchmarks.md)."""
    event_payload = event_body(event, call.call_id)
    state = as_of_now(call) if lifecycle else None
    api_key_id = call.api_key_id
    transaction.on_commit(lambda: send(call_id=call.call_id, event=event_payload, call=state, api_key_id=api_key_id))


def as_of_now(call: Call) -> Call:
    """A copy of `call` that later changes to it leave alone, with every field its push shows.

    Transitions set new values on a call (`setattr`), never change one in place, so a copy of its
    fields suffices. Fields deferred when it was loaded are read now, in the transaction, as
    serialising it here would have: the copy is rendered on an event loop, where the database is
    out of reach."""
    selectors.read_deferred(call)
    state = Call.__new__(Call)
    state.__dict__ = call.__dict__.copy()
    return state


def rendered(event: dict[str, Any], call: Call | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A push's event and call as subscribers receive them: through JSON and back, so that every
    subscriber of an in-memory layer gets plain values of its own."""
    return json.loads(json.dumps(event)), None if call is None else json.loads(json.dumps(represent(CallSerializer, call)))


def event_body(event: CallEvent, call_id: str) -> dict[str, Any]:
    """An event as the API shows it (CallEventSerializer's fields and values), built by hand: a
    monitor stores thousands of events a second, and every transition pushes one, and the
    serializer would cost more than the rest of the push."""
    return {
        "id": event.pk,
        "call_id": call_id,
        "event_type": event.event_type,
        "timestamp": int(event.created_at.timestamp()),
        "event_data": event.data,
        "actor": event.actor,
    }


def events_recorded(*, events: list[CallEvent], call: Call) -> None:
    """Schedule, for after commit, the push of a batch of upstream events to the call's subscribers."""
    if not events:
        return
    payloads = [event_body(event, call.call_id) for event in events]
    # No JSON round-trip check here (unlike event_recorded): these payloads were parsed from JSON
    # a moment ago and hold nothing else, and at thousands of events a second the check would
    # cost as much as storing them.
    transaction.on_commit(lambda: send_batch(call_id=call.call_id, events=payloads))


def metrics_changed(*, call: Call, to_list: bool) -> None:
    """Schedule, for after commit, the push of a call's new quality figures (not a transition: no event).

    `{"type": "call.metrics", "call_id", "metrics"}` to the call's subscribers, and to the list
    feed too when `to_list`.
    """
    message = {"type": "call.metrics", "call_id": call.call_id, "metrics": call.metrics, "api_key_id": call.api_key_id}
    transaction.on_commit(lambda: send_metrics(message, to_list=to_list))


def send_metrics(message: dict[str, Any], *, to_list: bool) -> None:
    layer = get_channel_layer()
    if layer is None:
        return

    async def deliver() -> None:
        await _send_all(layer, [(call_group(message["call_id"]), message), *([(CALLS_GROUP, message)] if to_list else [])])

    try:
        async_to_sync(deliver)()
    except Exception:
        logger.exception("Metrics push for %s failed", message["call_id"])


def send_batch(*, call_id: str, events: list[dict[str, Any]]) -> None:
    """Deliver a batch of a call's events in order, in one hop to the channel layer's loop."""
    layer = get_channel_layer()
    if layer is None:
        return
    group = call_group(call_id)

    async def deliver() -> None:
        await _send_all(layer, [(group, {"type": "call.event", "event": event}) for event in events])

    try:
        async_to_sync(deliver)()
    except Exception:
        logger.exception("Push to %s failed", group)


def send(*, call_id: str, event: dict[str, Any], call: Call | None, api_key_id: int | None = None) -> None:
    """Deliver one recorded event: to the call's subscribers, and to the list's if the call changed
    (`call`: as the change left it, `as_of_now`).

    `api_key_id` (the key that created the call) lets the list feed show a key only its own calls.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    pending: Pending | None = getattr(_pending, "current", None)
    if pending is not None:
        pending.jobs.append(functools.partial(_deliver, layer, call_id, event, call, api_key_id))
    else:
        async_to_sync(_deliver)(layer, call_id, event, call, api_key_id)


# The pushes a database-thread call (services.in_db_thread) made, while it runs on that thread.
_pending = threading.local()


class Pending:
    """The pushes one call on the database thread makes after its commits, handed to its caller's
    event loop when the call returns, and delivered there in order (`_Deliveries`) once the caller
    has gone on: the thread does not stop to hop to the loop and wait there for each push (two
    thread switches per transition), and the caller (a create about to answer its 201, say) does
    not wait for them either, though they still go out after their commits, in order.

    Should the caller be cancelled while the thread runs (its client went away), nobody would hand
    them over: the thread then does, when it finishes, so none is lost.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.jobs: list[Callable[[], Awaitable[None]]] = []
        self._lock = threading.Lock()
        self._finished = False
        self._abandoned = False

    def collect(self, fn: Callable[[], T]) -> T:
        """Run `fn` (on the database thread), keeping the pushes it makes for the caller."""
        _pending.current = self
        try:
            return fn()
        finally:
            _pending.current = None
            with self._lock:
                self._finished = True
                abandoned = self._abandoned
            if abandoned:
                self._deliver_from_thread()

    def deliver(self) -> None:
        """Queue the pushes for delivery, in order, on the caller's loop (where this runs)."""
        if not self.jobs:
            return
        deliveries = _deliveries.get(self.loop)
        if deliveries is None:
            deliveries = _deliveries[self.loop] = _Deliveries()
        deliveries.add(self.jobs)

    def abandon(self) -> None:
        """The caller was cancelled: the pushes are delivered all the same, by whoever finishes last."""
        with self._lock:
            if not self._finished:
                self._abandoned = True
                return
        self.deliver()

    def _deliver_from_thread(self) -> None:
        if not self.jobs:
            return
        try:
            # Queued behind any push the loop has yet to take from earlier jobs of this thread.
            self.loop.call_soon_threadsafe(self.deliver)
        except RuntimeError:
            # The loop has closed (a short-lived `async_to_sync` loop): deliver from here.
            for job in self.jobs:
                async_to_sync(job)()


class _Deliveries:
    """The pushes waiting for delivery on one event loop, sent one after the other by one task, in
    the order they were queued: a call's pushes arrive in the order of its transitions."""

    def __init__(self) -> None:
        self.jobs: collections.deque[Callable[[], Awaitable[None]]] = collections.deque()
        self.task: asyncio.Task[None] | None = None

    def add(self, jobs: list[Callable[[], Awaitable[None]]]) -> None:
        self.jobs.extend(jobs)
        if self.task is None:
            # A fresh context: the deliveries outlive the request whose context we are in.
            self.task = asyncio.get_running_loop().create_task(self._run(), context=contextvars.Context())

    async def _run(self) -> None:
        try:
            while self.jobs:
                job = self.jobs.popleft()
                try:
                    await job()
                except Exception:
                    logger.exception("Push delivery failed")
        finally:
            self.task = None


# Per event loop, the pushes of database-thread calls yet to be delivered.
_deliveries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deliveries] = weakref.WeakKeyDictionary()


async def delivered() -> None:
    """Wait until the pushes queued on this loop so far have been delivered."""
    deliveries = _deliveries.get(asyncio.get_running_loop())
    while deliveries is not None and deliveries.task is not None:
        await asyncio.shield(deliveries.task)


async def _deliver(layer: Any, call_id: str, event: dict[str, Any], call: Call | None, api_key_id: int | None) -> None:
    try:
        event, shown = rendered(event, call)
        messages: list[tuple[str, dict[str, Any]]] = [(call_group(call_id), {"type": "call.event", "event": event})]
        if shown is not None:
            messages.append((CALLS_GROUP, {"type": "call.changed", "event": event, "call": shown, "api_key_id": api_key_id}))
        await _send_all(layer, messages)
        if shown is not None:
            _schedule_stats(layer)
    except Exception:
        # A push is a notification; the committed row is the truth and clients re-fetch.
        logger.exception("Push for %s failed", call_id)


async def _send_all(layer: Any, messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Each (group, message), in order: in one round trip to Redis with our layers
    (`group_send_many`), one `group_send` at a time with any other (Channels' own, which the
    fan-out bench's `stock-layer` variant runs)."""
    many = getattr(layer, "group_send_many", None)
    if many is not None:
        await many(messages)
        return
    for group, message in messages:
        await layer.group_send(group, message)


def _has_subscribers(layer: Any) -> bool:
    """Whether anyone may listen to the list feed, known without a round trip: for in-memory
    layers (one process holds every socket), exactly; for the others, whose subscribers may be in
    any process, yes (`_anyone_listens` asks before a snapshot is computed)."""
    # Only an in-memory layer's `groups` are this feed's subscribers: the Redis pub/sub layer's hold
    # its own prefixed keys for this process's sockets alone.
    if isinstance(layer, InMemoryChannelLayer):
        return bool(layer.groups.get(CALLS_GROUP))
    return True


async def _anyone_listens(layer: Any) -> bool:
    """Whether any process holds a subscriber of the list feed now: for the Redis layer, one
    round trip (`group_listeners`) instead of a snapshot's queries, in every process that changed
    a call, a few times a second during a churn, for nobody."""
    listeners = getattr(layer, "group_listeners", None)
    if listeners is None:
        return _has_subscribers(layer)
    return bool(await listeners(CALLS_GROUP))


def _schedule_stats(layer: Any) -> None:
    """Schedule one statistics snapshot for the end of this burst, if someone subscribes and none
    is pending in this process (whichever loop or thread it was scheduled from)."""
    global _stats_pending
    if not _has_subscribers(layer):
        return
    loop = asyncio.get_running_loop()
    with _stats_lock:
        pending = _stats_pending
        # A snapshot scheduled on a loop that has stopped since (a short-lived async_to_sync loop)
        # will never run: it does not count as pending.
        if pending is not None and pending.is_running():
            return
        _stats_pending = loop
    # A fresh context: the push outlives the request (or sync call) whose context we are in.
    loop.call_later(STATS_PUSH_DELAY, lambda: asyncio.ensure_future(_push_stats(layer)), context=contextvars.Context())


async def _push_stats(layer: Any) -> None:
    global _stats_pending
    # Cleared before the query: a transition committed while it runs schedules the next snapshot.
    with _stats_lock:
        _stats_pending = None
    try:
        if not await _anyone_listens(layer):
            return
        stats = await database_sync_to_async(selectors.stats)()
        await layer.group_send(CALLS_GROUP, {"type": "stats.changed", "stats": stats})
    except Exception:
        logger.exception("Statistics push failed")
