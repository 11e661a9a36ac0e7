"""Start and stop real servers on loopback for a benchmark: `manage.py serve` (uvicorn, the whole
project, the local engine beside it) or `manage.py localrealtime` (the engine alone)."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Served:
    url: str
    # Where the local engine listens (OpenAI's stand-in): the broker's OPENAI_BASE_URL.
    engine_url: str
    # What a client sends to be an integrator: nothing in local mode, an API key in production.
    headers: dict[str, str] = field(default_factory=dict)


def production_env(engine_v1: str) -> dict[str, str]:
    """Settings of a production broker (DEBUG off, local mode off, requests with an API key) in
    front of an engine apart at `engine_v1`, on plain HTTP on loopback: what a benchmark of the
    production code path runs (DEBUG alone adds the query log's work to every statement)."""
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "REALTIME_LOCAL_MODE": "false",
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "LOCALREALTIME_ENABLED": "false",
        "OPENAI_API_KEY": "sk-localrealtime",
        "OPENAI_BASE_URL": engine_v1,
    }


@contextmanager
def server(
    extra_env: dict[str, str] | None = None,
    *,
    database: Path | str | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
    keep_log: Path | None = None,
    api_key: str | None = None,
) -> Iterator[Served]:
    """Yield the URLs of a fresh server with its own migrated SQLite database, or on `database`:
    a SQLite file or a database URL (`postgres://…`).

    `on_start` receives the server process once it answers (to sample its memory, say);
    `keep_log` is where the server's log is copied when it stops. With DEBUG off (production_env),
    requests carry `api_key`, or a key made for the run.
    """
    with tempfile.TemporaryDirectory() as tmp:
        db = database or Path(tmp) / "bench.sqlite3"
        port, engine_port = free_port(), free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "iaposte.settings",
            "DEBUG": "true",
            "SECRET_KEY": "bench-only",
            "OPENAI_API_KEY": "",
            "DATABASE_URL": database_url(db),
            "PORT": str(port),
            "LOCALREALTIME_PORT": str(engine_port),
            "LOG_LEVEL": "WARNING",
            # Benchmarks measure throughput; the per-address rate limit would refuse the bursts,
            # and the concurrency limit the 200-call bursts (a benchmark may set its own).
            "REALTIME_THROTTLE_ANONYMOUS": "",
            "REALTIME_MAX_ACTIVE_CALLS": "0",
            # The engine's SIP endpoint on a port of its own: two servers never collide on 5070.
            "LOCALREALTIME_SIP_PORT": str(free_port()),
            **(extra_env or {}),
        }
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        headers: dict[str, str] = {}
        if env["DEBUG"] == "false":
            key = api_key or subprocess.run([sys.executable, "manage.py", "create_api_key", "bench"], cwd=ROOT, env=env, check=True,
                                 capture_output=True, text=True).stdout.strip()  # fmt: skip
            headers["Authorization"] = f"Bearer {key}"
        log = open(Path(tmp) / "server.log", "wb")
        # BENCH_VARIANT: the server with parts swapped for what they replace (bench/_variant_server.py).
        serve = ["bench/_variant_server.py"] if env.get("BENCH_VARIANT") else ["manage.py", "serve"]
        process = subprocess.Popen(
            [sys.executable, *serve, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/api/realtime/stats", headers=headers, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((Path(tmp) / "server.log").read_text()[-2000:])
                time.sleep(0.2)
            if on_start is not None:
                on_start(process)
            yield Served(url, env.get("OPENAI_BASE_URL") or f"http://127.0.0.1:{engine_port}/v1", headers)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
            if keep_log is not None:
                shutil.copyfile(Path(tmp) / "server.log", keep_log)


def database_url(database: Path | str) -> str:
    """A database given as a SQLite file's path or as a URL, as a URL."""
    return database if isinstance(database, str) and "://" in database else f"sqlite:///{database}"


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far (utime + stime, /proc/PID/stat), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def speed_ms() -> float:
    """The machine's speed of the moment: milliseconds for a fixed pure-Python loop, median of 3.

    On a shared host the same code runs up to 1.8 times slower within minutes, at the same load
    (docs/benchmarks.md): a figure is comparable only with one taken at the same speed. The
    harnesses print this before and after their runs, and each alternated round's."""
    times = []
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for i in range(1_000_000):
            total += i
        times.append((time.perf_counter() - started) * 1000)
    return round(sorted(times)[1], 1)


def speed_note(speeds: list[float]) -> str:
    """The probes of a run, and whether the machine's speed moved between them (by over 20 %)."""
    shown = ", ".join(f"{s:.0f}" for s in speeds)
    moved = len(speeds) > 1 and max(speeds) > 1.2 * min(speeds)
    verdict = "the speed moved: compare only figures of rounds at the same speed" if moved else "steady"
    return f"machine speed probe (ms, lower is faster): {shown}; {verdict}"


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?"
    )
    return f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}"


@contextmanager
def engine(extra_env: dict[str, str] | None = None, *, on_start: Callable[[subprocess.Popen[bytes]], None] | None = None) -> Iterator[str]:
    """Yield the base URL (.../v1) of the local engine running alone (`manage.py localrealtime`);
    `on_start` receives its process once it answers."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "iaposte.settings",
        "DEBUG": "true",
        "OPENAI_API_KEY": "",
        "LOCALREALTIME_SIP_PORT": str(free_port()),
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "localrealtime", "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the local engine did not start")
            time.sleep(0.2)
        if on_start is not None:
            on_start(process)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def fresh_database_env(**extra: str) -> Path:
    """Point this process's Django at a fresh SQLite file (production settings, debug on, no
    OpenAI key unless given): for benchmarks that run the project's code in-process. Returns the file."""
    folder = Path(tempfile.mkdtemp(prefix="iaposte-bench-"))
    # The file (and its WAL) is this process's only: removed when it exits.
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    database = folder / "bench.sqlite3"
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "iaposte.settings",
            "DEBUG": "true",
            "SECRET_KEY": "bench-only",
            "DATABASE_URL": f"sqlite:///{database}",
            "OPENAI_API_KEY": "",
            **extra,
        }
    )
    return database
