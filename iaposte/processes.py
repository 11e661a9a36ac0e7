"""What every long-running command of the project does with its process: `manage.py serve`,
`realtime_worker` and `localrealtime` stop on the same signals, the same way."""

from __future__ import annotations

import asyncio
import signal
from types import FrameType


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop`, on the running loop.

    Through `signal.signal` rather than `loop.add_signal_handler`: the loop's own handler learns of
    a signal from a byte the C handler writes into the loop's self-pipe, which every
    `call_soon_threadsafe` (each thread job's return: the database thread's, aiortc's) fills too. An AF_UNIX socket counts
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
