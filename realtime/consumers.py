"""WebSocket feeds (Channels): thin, push-only consumers.

- `/ws/realtime/calls`: every call's lifecycle change (`call.changed`: event, call, stats);
- `/ws/realtime/calls/<call_id>`: every event recorded for that call (`call.event`).

Consumers only join groups and forward what `realtime.publish` sends; they never call
`group_send` themselves, so a change made anywhere (API, admin, background job) reaches them
exactly once, after commit. Payloads are the REST serializers' output, forwarded as they are.
"""

from __future__ import annotations

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

    async def join(self, group: str) -> None:
        self.group = group
        await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # Push-only: clients change calls through the REST API, which is what records and pushes.
        pass

    async def call_changed(self, message: dict[str, Any]) -> None:
        await self.send_json({"type": "call.changed", "event": message["event"], "call": message["call"], "stats": message["stats"]})

    async def call_event(self, message: dict[str, Any]) -> None:
        await self.send_json({"type": "call.event", "event": message["event"]})


class CallsConsumer(_Feed):
    """`/ws/realtime/calls`: lifecycle changes of every call, with a fresh stats snapshot."""

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
