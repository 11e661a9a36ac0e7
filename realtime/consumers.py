"""WebSocket feeds (Channels): thin, push-only consumers.

- `/ws/realtime/calls`: every call's lifecycle change (`call.changed`: event, call) and fresh
  statistics after them (`stats.changed`);
- `/ws/realtime/calls/<call_id>`: every event recorded for that call (`call.event`).

Consumers only join groups and forward what `realtime.publish` sends; they never call
`group_send` themselves, so a change made anywhere (API, admin, background job) reaches them
exactly once, after commit. Payloads are the REST serializers' output, forwarded as they are.
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from . import publish
from .auth.principals import Principal, may_see_call, may_see_calls_of
from .auth.websocket import principal_from_scope, websocket_subprotocol
from .models import Call


@database_sync_to_async
def _find_call(call_id: str) -> Call | None:
    return Call.objects.only("pk", "call_id", "api_key_id").filter(call_id=call_id).first()


class _Feed(AsyncJsonWebsocketConsumer):
    """Joins one group on connect, leaves it on disconnect, forwards pushes as JSON."""

    group: str | None = None
    principal: Principal | None = None
    PUSHES = {"call.changed": "call_changed", "call.event": "call_event", "stats.changed": "stats_changed"}

    async def join(self, group: str) -> None:
        self.group = group
        await self.channel_layer.group_add(group, self.channel_name)
        # A key sent as a `bearer.<key>` subprotocol is acknowledged without echoing the key.
        await self.accept(subprotocol=websocket_subprotocol(self.scope))

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

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

    async def stats_changed(self, message: dict[str, Any]) -> None:
        # Statistics cover every call: only for those who see every call (staff, local mode).
        if self.principal is not None and self.principal.sees_all:
            await self.send(text_data=_encode(message, ("stats",)))


# The last push encoded, keyed by the identity of its first payload object. The embedded channel layer
# hands every member of a group the same nested objects (realtime.layers), so a push to 1,000
# sockets is encoded once, not 1,000 times. Holding the object keeps its id from being reused;
# with layers that copy per member (Redis) the identity never matches and each socket encodes.
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
