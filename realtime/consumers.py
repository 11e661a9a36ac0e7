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
from .models import Call


async def _allowed(scope: dict[str, Any], call: Call | None = None) -> bool:
    """May this socket connect (and, with `call`, see that call)?

    The one place that decides, mirroring the REST API's permission (open today: AllowAny), so
    the sockets follow whatever rule the API adopts by changing this function alone.
    """
    return True


@database_sync_to_async
def _find_call(call_id: str) -> Call | None:
    return Call.objects.only("pk", "call_id").filter(call_id=call_id).first()


class _Feed(AsyncJsonWebsocketConsumer):
    """Joins one group on connect, leaves it on disconnect, forwards pushes as JSON."""

    group: str | None = None
    PUSHES = {"call.changed": "call_changed", "call.event": "call_event", "stats.changed": "stats_changed"}

    async def join(self, group: str) -> None:
        self.group = group
        await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

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
        await self.send(text_data=_encode(message, ("event", "call")))

    async def call_event(self, message: dict[str, Any]) -> None:
        await self.send(text_data=_encode(message, ("event",)))

    async def stats_changed(self, message: dict[str, Any]) -> None:
        await self.send(text_data=_encode(message, ("stats",)))


# The last push encoded, keyed by the identity of its first payload object. The embedded channel layer
# hands every member of a group the same nested objects (realtime.layers), so a push to 1,000
# sockets is encoded once, not 1,000 times. Holding the object keeps its id from being reused;
# with layers that copy per member (Redis) the identity never matches and each socket encodes.
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
        if not await _allowed(self.scope):
            await self.close()
            return
        await self.join(publish.CALLS_GROUP)


class CallConsumer(_Feed):
    """`/ws/realtime/calls/<call_id>`: every event recorded for one call. Unknown ids are refused."""

    async def connect(self) -> None:
        call = await _find_call(self.scope["url_route"]["kwargs"]["call_id"])
        if call is None or not await _allowed(self.scope, call):
            await self.close()
            return
        await self.join(publish.call_group(call.call_id))
