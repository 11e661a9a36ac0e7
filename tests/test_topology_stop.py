"""Stopping `make run-scaled`: honcho signals every process at once, and Redis (`python -m
deploy.servers redis`) outlives its clients, so the web processes and the worker stop without
losing their connection to it first. Real redis-server from Debian's package."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from deploy import servers

from .conftest import ROOT


@pytest.fixture
def redis_under_honcho(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The Procfile's redis line, in a process group of its own as honcho starts it."""
    port = servers.free_port()
    command = [sys.executable, "-m", "deploy.servers", "redis", "--folder", str(tmp_path), "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not servers.port_open(port):
            assert process.poll() is None and time.monotonic() < deadline, "Redis did not start"
            time.sleep(0.05)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        # Redis follows its parent (PR_SET_PDEATHSIG); wait for its port to close.
        deadline = time.monotonic() + 10
        while servers.port_open(port) and time.monotonic() < deadline:
            time.sleep(0.05)


def _wait_closed(port: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while servers.port_open(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_it_keeps_serving_a_connected_client_after_the_stop_signal_then_stops_when_it_leaves(redis_under_honcho):
    process, port = redis_under_honcho
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    assert client.ping()

    os.killpg(process.pid, signal.SIGTERM)  # as honcho stops a Procfile's processes
    time.sleep(0.5)

    assert client.ping()
    assert process.poll() is None
    client.close()
    assert process.wait(10) == 0
    assert _wait_closed(port, 5)


def test_it_stops_redis_when_a_client_never_leaves(redis_under_honcho):
    process, port = redis_under_honcho
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    assert client.ping()

    os.killpg(process.pid, signal.SIGTERM)

    # Within the grace (REDIS_STOP_GRACE), before honcho's own deadline of 5 s.
    assert process.wait(servers.REDIS_STOP_GRACE + 5) == 0
    assert _wait_closed(port, 5)
    client.close()


def test_it_takes_redis_along_when_its_parent_is_killed(redis_under_honcho):
    process, port = redis_under_honcho

    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)

    assert _wait_closed(port, 10)
