"""The channel layer of the embedded (single-process) setup.

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
default only. Redis deployments (REDIS_URL) use channels_redis and are unaffected.
"""

from __future__ import annotations

import asyncio
import time
from copy import deepcopy
from typing import Any

from channels.layers import InMemoryChannelLayer


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
