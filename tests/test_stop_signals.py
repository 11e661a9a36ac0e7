"""SIGTERM and SIGINT stop `manage.py serve`, `realtime_worker` and `localrealtime` (iaposte.processes)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from iaposte import processes


@pytest.fixture
def handlers():
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.asyncio
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_it_stops_when_the_signal_arrives_while_the_loops_self_pipe_is_full(handlers, signum):
    stop = asyncio.Event()
    processes.stop_on_signals(stop)
    loop = asyncio.get_running_loop()
    # What a busy loop sees when threads' completions (call_soon_threadsafe) pile up unread: each
    # writes a byte into the loop's self-pipe, and a few hundred fill it. The signal's own byte
    # then finds no room, which `loop.add_signal_handler` depends on.
    for _ in range(5000):
        loop.call_soon_threadsafe(lambda: None)
    os.kill(os.getpid(), signum)
    await asyncio.wait_for(stop.wait(), timeout=5)
    assert stop.is_set()


@pytest.mark.asyncio
async def test_it_leaves_the_loop_running_until_a_signal_arrives(handlers):
    stop = asyncio.Event()
    processes.stop_on_signals(stop)
    await asyncio.sleep(0.05)
    assert not stop.is_set()
