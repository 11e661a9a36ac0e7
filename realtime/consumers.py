"""WebSocket feeds (Channels): thin, push-only consumers.

- `/ws/realtime/calls`: every call's lifecycle change (`call.changed`: event, call) and fresh
  statistics after them (`stats.changed`);
- `/ws/realtime/calls/<call_id>`: every event recorded for that call (`call.event`).

Both also get `call.metrics` (`call_id`, `metrics`) when a call's quality figures change.

Consumers only join groups and forward what `realtime.publish` sends; they never call
`group_send` themselves, so a change made anywhere (API, admin, background job) reaches them
exactly once, after commit. Payloads are the REST serializers' output, forwarded as they are.

A socket opened with an API key also joins that key's group: when the key is revoked, or the
sweeper notes its expiry, the socket gets `{"type": "access.revoked", "reason": ...}` and is closed
with code 4401 (docs/security.md), in whichever process holds it. A key with an expiry also closes
its sockets at that time by a timer of their own, without waiting for the sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.utils import timezone

from . import publish
from .auth.principals import Principal, may_see_call, may_see_calls_of
from .auth.websocket import principal_from_scope, websocket_subprotocol
from .models import ApiKey, Call

# Close code for a socket whose key stopped being valid (4000-4999: for applications; 4401 echoes
# HTTP 401). The reason also travels in an `access.revoked` message first, for clients whose
# WebSocket API does not show close reasons.
CLOSE_ACCESS_REVOKED = 4401


@database_sync_to_async
def _key_usable(api_key_id: int) -> bool:
    key = ApiKey.objects.only("revoked_at", "expires_at").filter(pk=api_key_id).first()
    return key is not None and key.is_usable()


@database_sync_to_async
def _find_call(call_id: str) -> Call | None:
    return Call.objects.only("pk", "call_id", "api_key_id").filter(call_id=call_id).first()


async def dispatch_from(
    sources: Sequence[Callable[[], Awaitable[dict[str, Any]]]], dispatch: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    """`channels.utils.await_many_dispatch` with one long-lived task per source instead of a new
    task and an `asyncio.wait` for every message; a lock keeps handlers running one at a time,
    in the order their messages were read, as there.

    Why it stays: a push to 2,000 subscribers is one message per socket, and the stock loop's task
    and wait per message were most of a web process's CPU per frame (docs/benchmarks.md,
    "WebSocket fan-out: the consumers' loop").
    """
    lock = asyncio.Lock()

    async def pump(source: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        while True:
            message = await source()
            async with lock:
                await dispatch(message)

    tasks = [asyncio.ensure_future(pump(source)) for source in sources]
    try:
        # Pumps only end by raising: StopConsumer once the socket has closed, or a handler's error.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Feed(AsyncJsonWebsocketConsumer):
    """Joins one group on connect, leaves it on disconnect, forwards pushes as JSON."""

    group: str | None = None
    key_group: str | None = None
    principal: Principal | None = None
    expiry_timer: asyncio.TimerHandle | None = None
    expiry_check: asyncio.Future[None] | None = None
    PUSHES = {
        "call.changed": "call_changed",
        "call.event": "call_event",
        "call.metrics": "call_metrics",
        "stats.changed": "stats_changed",
        "access.revoked": "access_revoked",
    }

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # AsyncConsumer.__call__, with dispatch_from in place of await_many_dispatch (a feed always
        # has a channel layer: it joins a group).
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        self.base_send = send
        with contextlib.suppress(StopConsumer):
            await dispatch_from((receive, self.channel_receive), self.dispatch)

    async def join(self, group: str) -> None:
        self.group = group
        await self.channel_layer.group_add(group, self.channel_name)
        key = self.principal.api_key if self.principal is not None else None
        if key is not None:
            self.key_group = publish.api_key_group(key.pk)
            await self.channel_layer.group_add(self.key_group, self.channel_name)
            # Revoked between the handshake's check and joining the key's group: that push was missed.
            if not await _key_usable(key.pk):
                await self.close()
                return
            if key.expires_at is not None:
                delay = max(0.0, (key.expires_at - timezone.now()).total_seconds())
                self.expiry_timer = asyncio.get_running_loop().call_later(delay, self._expiry_due)
        # A key sent as a `bearer.<key>` subprotocol is acknowledged without echoing the key.
        await self.accept(subprotocol=websocket_subprotocol(self.scope))

    def _expiry_due(self) -> None:
        # Held, so the check is not collected half-way.
        self.expiry_check = asyncio.ensure_future(self._close_if_expired())

    async def _close_if_expired(self) -> None:
        key = self.principal.api_key if self.principal is not None else None
        # The expiry may have been moved later in the admin since this socket opened.
        if key is not None and not await _key_usable(key.pk):
            await self.access_revoked({"reason": publish.KEY_EXPIRED})

    async def disconnect(self, code: int) -> None:
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
        for group in (self.group, self.key_group):
            if group is not None:
                await self.channel_layer.group_discard(group, self.channel_name)

    async def access_revoked(self, message: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"type": "access.revoked", "reason": message["reason"]}))
        await self.close(code=CLOSE_ACCESS_REVOKED, reason=message["reason"])

    async def dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] in self.PUSHES:
            # Channels closes stale DB connections (a thread hop) before every handler; pushes carry
            # all they need and never touch the database, and one push reaches every subscriber, so
            # that hop would cost one thread round-trip per socket per change.
            await getattr(self, self.PUSHES[message["type"]])(message)
            return
        await super().dispatch(message)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # Push-only: clients change calls through the REST API, which is what records and pushes.
        pass

    async def call_changed(self, message: dict[str, Any]) -> None:
        # The list feed carries every call; a key sees only the calls it created (as in the API).
        if may_see_calls_of(self.principal, api_key_id=message.get("api_key_id")):
            await self.send(text_data=_encode(message, ("event", "call")))

    async def call_event(self, message: dict[str, Any]) -> None:
        await self.send(text_data=_encode(message, ("event",)))

    async def call_metrics(self, message: dict[str, Any]) -> None:
        if may_see_calls_of(self.principal, api_key_id=message.get("api_key_id")):
            await self.send(text_data=_encode(message, ("metrics", "call_id")))

    async def stats_changed(self, message: dict[str, Any]) -> None:
        # Statistics cover every call: only for those who see every call (staff, local mode).
        if self.principal is not None and self.principal.sees_all:
            await self.send(text_data=_encode(message, ("stats",)))


# The last push encoded, keyed by the identity of its first payload object. Our channel layers
# (realtime.layers: in-memory, and Redis pub/sub, which decodes a push once per process) hand
# every member of a group the same nested objects, so a push to 1,000 sockets is encoded once,
# not 1,000 times. Holding the object keeps its id from being reused; with a layer that copies
# per member the identity never matches and each socket encodes.
# Why it stays: encoding a call.changed push for 1,000 sockets costs about 23 ms of CPU without it
# and 0.3 ms with it (`bench/ws_fanout.py --parts`), per push, on the loop that serves everything.
_last_encoded: tuple[str, object, str] = ("", None, "")


def _encode(message: dict[str, Any], keys: tuple[str, ...]) -> str:
    global _last_encoded
    kind, source = message["type"], message[keys[0]]
    if _last_encoded[0] == kind and _last_encoded[1] is source:
        return _last_encoded[2]
    text = json.dumps({"type": kind, **{key: message[key] for key in keys}})
    _last_encoded = (kind, source, text)
    return text


class CallsConsumer(_Feed):
    """`/ws/realtime/calls`: lifecycle changes of every call, and statistics as they change."""

    async def connect(self) -> None:
        # The same rules as the REST API: a key, a staff session, or local mode from loopback.
        self.principal = await principal_from_scope(self.scope)
        if self.principal is None or not self.principal.can_view:
            await self.close()
            return
        await self.join(publish.CALLS_GROUP)


class CallConsumer(_Feed):
    """`/ws/realtime/calls/<call_id>`: every event recorded for one call. Unknown ids are refused."""

    async def connect(self) -> None:
        self.principal = await principal_from_scope(self.scope)
        call = await _find_call(self.scope["url_route"]["kwargs"]["call_id"])
        # Unknown and not-yours are refused alike, so ids do not leak.
        if call is None or not may_see_call(self.principal, call):
            await self.close()
            return
        await self.join(publish.call_group(call.call_id))


class NoSuchFeed(AsyncJsonWebsocketConsumer):
    """Any other WebSocket path: refused at the handshake, as quietly as an HTTP 404."""

    async def connect(self) -> None:
        await self.close()
