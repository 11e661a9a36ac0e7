"""Everything a process does in the background: call monitors (monitor.py), the sweeper, the
webhook dispatcher (webhooks/dispatcher.py) and the retention purge (retention.py).

One function for every process that runs them: `manage.py serve` on the web server's event loop when
REALTIME_MONITORS is "embedded", `manage.py realtime_worker` when it is "worker".
"""

from __future__ import annotations

import asyncio
import signal
from types import FrameType

from . import retention, sweeper
from .monitor import Supervisor
from .webhooks import dispatcher


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop`, on the running loop.

    Through `signal.signal` rather than `loop.add_signal_handler`: the loop's own handler learns of
    a signal from a byte the C handler writes into the loop's self-pipe, which every
    `call_soon_threadsafe` (each database thread job's return) fills too. An AF_UNIX socket counts
    each one-byte write at the full size of its buffer unit, so a few hundred of them, waiting while
    the loop is busy, fill it; a signal arriving then is lost ("Exception ignored when trying to
    write to the signal wakeup fd"). Measured: one stop in four with 1,000 WebSockets closing just
    before. A Python handler always runs, on the main thread, which is the loop's.
    """
    loop = asyncio.get_running_loop()

    def handle(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(stop.set)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)


async def run(stop: asyncio.Event, *, supervisor: Supervisor | None = None) -> None:
    """Watch active calls, sweep calls past their limits, send webhooks and purge expired data until
    `stop` is set.

    On return every monitor has stored what it received and released its lease, so another
    process (or this one, restarted) re-attaches the calls at once (docs/limits.md).
    """
    await asyncio.gather((supervisor or Supervisor()).run(stop), sweeper.run(stop), dispatcher.run(stop), retention.run(stop))
