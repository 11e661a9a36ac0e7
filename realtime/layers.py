"""Our channel layers: `FanOutInMemoryChannelLayer` for the embedded (single-process) setup, and
`FanOutRedisPubSubChannelLayer` for the scaled one (REDIS_URL; its reasons are on the class).

Channels' `InMemoryChannelLayer` does two things per push that grow with the number of sockets,
measured with bench/ws_fanout.py at 1,000 subscribers:

- it sweeps every channel's queue for expired messages at the start of every `receive` and
  `group_send`; one push to N subscribers makes N receives each sweeping N queues, O(N²) per push
  (about 0.25 s of CPU per push to 1,000 subscribers, under the profiler). Sweeping at most once
  a second keeps expiry (60 s by default) working and makes a push O(N);
- `group_send` starts one task per member, each deep-copying the message. Here the message is
  deep-copied once per group send and each member gets its own shallow copy: members may change
  the top-level keys of what they receive, and must treat nested values as read-only (our
  consumers only serialise them).

Why it stays (docs/benchmarks.md, "WebSocket fan-out"): delivering one push to 1,000 members
costs about 50 ms of CPU here against about 1,000 ms with the stock layer (`bench/ws_fanout.py
--parts`, medians of four sessions), and a call's DELETE with 1,000 subscribers costs the server
720 ms of CPU against 1,110 ms with the stock layer (`--variant stock-layer`).
Channels' maintainers call the stock layer test-only; this fork exists for the one-process
default only.
"""

from __future__ import annotations

import asyncio
import time
from copy import deepcopy
from typing import Any

from channels.layers import InMemoryChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection


class FanOutInMemoryChannelLayer(InMemoryChannelLayer):
    clean_interval = 1.0
    _cleaned_at = float("-inf")

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < self.clean_interval:
            return
        self._cleaned_at = now
        super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        shared = deepcopy(message)
        expires = time.time() + self.expiry
        for channel in list(self.groups.get(group, {})):
            queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
            try:
                queue.put_nowait((expires, dict(shared)))
            except asyncio.QueueFull:
                # As upstream: a member that cannot keep up misses the message (clients re-fetch).
                continue

    async def group_send_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """`group_send` for each (group, message), in order (see the Redis layer's)."""
        for group, message in messages:
            await self.group_send(group, message)


class FanOutRedisPubSubChannelLayer(RedisPubSubChannelLayer):
    """channels_redis' pub/sub layer, decoding a group message once per process, not once per member.

    A push to a group is one PUBLISH, received once by each process subscribed to the group (the
    stock layer already does that). The stock layer then queues the raw bytes for every member,
    and every member's `receive` decodes them again: 1,000 msgpack decodes per push per process,
    and 1,000 distinct dicts, so the consumers' encode cache (realtime.consumers._encode) never
    hits and each socket JSON-encodes the push again. Here the shard decodes a group message once
    and queues the same dict for every member; `receive` hands each member its own shallow copy,
    as `FanOutInMemoryChannelLayer` does (members may change the top-level keys, must treat
    nested values as read-only).

    Why it stays: docs/benchmarks.md, "Scaled topology" (web processes' CPU per fan-out push to
    2,000 subscribers, with and without it).
    """

    def deserialize(self, message: Any) -> dict[str, Any]:
        if isinstance(message, dict):
            # Already decoded by _Shard._receive_message (one group message for many members).
            return dict(message)
        decoded: dict[str, Any] = super().deserialize(message)
        return decoded

    async def group_listeners(self, group: str) -> int:
        """How many processes hold members of `group`, whichever process asks: each subscribes to
        the group's Redis channel while it has members, so this is Redis' `PUBSUB NUMSUB` of it."""
        layer = self._get_layer()
        channel = layer._get_group_channel_name(group)
        shard = layer._get_shard(channel)
        shard._ensure_redis()
        [(_, listeners)] = await shard._redis.pubsub_numsub(channel)
        return int(listeners)

    async def group_send_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """`group_send` for each (group, message), in order, in one round trip to each Redis shard
        (a pipeline of PUBLISH): a call's event goes to its own group and to the list feed, and a
        monitor's batch is several events. Each `group_send` is a round trip, one at a time per
        process (the shard's lock)."""
        layer = self._get_layer()
        by_shard: dict[_Shard, list[tuple[str, bytes]]] = {}
        for group, message in messages:
            channel = layer._get_group_channel_name(group)
            by_shard.setdefault(layer._get_shard(channel), []).append((channel, self.serialize(message)))
        for shard, published in by_shard.items():
            await shard.publish_many(published)

    def _get_layer(self) -> RedisPubSubLoopLayer:
        loop = asyncio.get_running_loop()
        layer: RedisPubSubLoopLayer | None = self._layers.get(loop)
        if layer is None:
            layer = super()._get_layer()
            # Shards connect lazily: replacing them before first use is safe.
            layer._shards = [_Shard(shard.host, layer) for shard in layer._shards]
        return layer


class _Shard(RedisSingleShardConnection):
    async def publish_many(self, published: list[tuple[str, bytes]]) -> None:
        if len(published) == 1:
            await self.publish(*published[0])
            return
        async with self._lock:
            self._ensure_redis()
            pipe = self._redis.pipeline(transaction=False)
            for channel, data in published:
                pipe.publish(channel, data)
            await pipe.execute()

    def _receive_message(self, message: dict[str, Any] | None) -> None:
        if message is None:
            return
        name, data = message["channel"], message["data"]
        if isinstance(name, bytes):
            name = name.decode()
        layer = self.channel_layer
        if name in layer.channels:
            layer.channels[name].put_nowait(data)
        elif name in layer.groups:
            decoded = layer.channel_layer.deserialize(data)
            for channel_name in layer.groups[name]:
                queue = layer.channels.get(channel_name)
                if queue is not None:
                    queue.put_nowait(decoded)
