"""What keeps a server's event loop waiting on its own process: the garbage collector's full
collections over the start-up heap, and the GIL held by the process's other threads.

CPython's cyclic collector walks every tracked object in a full (generation 2) collection. A
server process holds a few hundred thousand of them from start-up (Django, DRF, the OpenAI SDK's
pydantic types, aiortc, the engine) that never become garbage, and a full collection over them
holds the GIL, and so the server's loop, for 60–450 ms (measured: docs/benchmarks.md, "Phone calls
(SIP)"; with 1,000 WebSockets held, 185–300 ms of CPU per full pass, 40–100 ms once frozen:
"Scaled topology"). Every request, webhook, RTP packet and sideband frame waiting on the loop
waits that long.

`settle()` runs before the process accepts its first connection: it imports what the first
call would import lazily (the SDK's realtime and webhook types and resources, its WebSocket
client), builds the SDK's client (and its TLS context) for this loop, collects once, then
`gc.freeze()`s what is left, so later collections walk only what was allocated since. Frozen objects are never collected: that
is the start-up heap, which lives as long as the process anyway.

`share_the_gil()` shortens how long a thread may keep the GIL while another waits for it
(REALTIME_GIL_SWITCH_MS, Python's default 5 ms). The loop thread gives the GIL up at every
`select()` and socket call; with call setup's database thread or Django's sync threads busy, it
waits up to the whole interval to get it back, many times per request.
"""

from __future__ import annotations

import gc
import importlib
import logging
import sys
import time

import openai
from django.conf import settings

logger = logging.getLogger(__name__)

# Imported by the first webhook (its types), accept or refer (the calls resource) and sideband
# (the realtime connection, its event types, the WebSocket client): at start-up rather than on
# the loop mid-call, and before the freeze so that they are frozen too.
LAZY_MODULES = (
    "openai.resources.realtime",
    "openai.resources.webhooks",
    "openai.types.realtime",
    "openai.types.webhooks",
    "openai.lib._realtime",
    "websockets.asyncio.client",
)


def settle() -> None:
    """Import what calls import lazily, then freeze the start-up heap (REALTIME_GC_FREEZE)."""
    if not settings.REALTIME_GC_FREEZE:
        return
    started = time.perf_counter()
    for name in LAZY_MODULES:
        importlib.import_module(name)
    from . import upstream

    try:
        sdk = upstream.client()
        # The SDK builds its resources on first use (cached properties).
        _ = sdk.realtime.calls, sdk.webhooks
    except RuntimeError:
        pass  # no running loop (a command without one): the first call builds the client
    except openai.OpenAIError as exc:
        # No credentials configured, say: the first call reports it, in the API's error shape.
        logger.info("The OpenAI client was not built at start-up: %s", exc)
    freeze(started)


def freeze(started: float | None = None) -> None:
    """Collect once, then freeze what is left: the start-up heap (REALTIME_GC_FREEZE)."""
    if not settings.REALTIME_GC_FREEZE:
        return
    started = time.perf_counter() if started is None else started
    gc.collect()
    gc.freeze()
    took = (time.perf_counter() - started) * 1000
    logger.info("Start-up heap frozen: %d objects in %.0f ms (collector thresholds %s)", gc.get_freeze_count(), took, gc.get_threshold())


def share_the_gil() -> None:
    """Apply REALTIME_GIL_SWITCH_MS (0: keep Python's default)."""
    if settings.REALTIME_GIL_SWITCH_MS > 0:
        sys.setswitchinterval(settings.REALTIME_GIL_SWITCH_MS / 1000)
