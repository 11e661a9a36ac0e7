"""Running real SIP software (SIPp, baresip) against a test server's SIP endpoint, on loopback only."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bench._sip import sipp_command
from tests.conftest import Server, start_server, stop_server

T = TypeVar("T")


def free_port(*, span: int = 1) -> int:
    """A loopback port free for UDP and TCP, with `span - 1` free ports after it (SIPp's media)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + span > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + span):
                    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                        sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
                        sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free loopback port")


@contextlib.contextmanager
def sip_server(tmp_path: Path, **env: str) -> Iterator[tuple[Server, int]]:
    """A real ASGI server with monitors and its SIP endpoint on a port of its own."""
    sip_port = free_port()
    server = start_server(
        tmp_path,
        extra_env={
            "REALTIME_MONITORS": "embedded",
            "LOCALREALTIME_SIP_PORT": str(sip_port),
            "LOCALREALTIME_SIP_DECIDE_SECONDS": "3",
            **env,
        },
    )
    try:
        wait_for(lambda: "Local SIP endpoint" in server.log.read_text(), within=20)
        yield server, sip_port
    finally:
        stop_server(server)


def sipp(
    sip_port: int, scenario: str, workdir: Path, *, called: str = "+33180000002", transport: str = "u1", extra: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start one SIPp caller (a UAC scenario of tests/sip/) against the engine's SIP port."""
    command = sipp_command(sip_port, scenario, port=free_port(), media_port=free_port(span=4), called=called)
    command += ["-t", transport, "-m", "1", "-timeout", "60s", "-trace_err", *extra]
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen[bytes], workdir: Path, timeout: float = 90) -> tuple[int, str]:
    """Wait for SIPp; its exit code (0: every call succeeded) and what it said, errors included."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    errors = "".join(p.read_text(errors="replace")[-3000:] for p in workdir.glob("*_errors.log"))
    return process.returncode, output.decode(errors="replace")[-2000:] + errors


def wait_for(check: Callable[[], T], *, within: float = 20) -> T:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {check}")
        time.sleep(0.1)


def engine_call(server: Server, upstream_id: str) -> dict[str, Any]:
    return server.engine("GET", f"calls/{upstream_id}").json()
