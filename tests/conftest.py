"""Shared fixtures: the real ASGI server on loopback, a real WebRTC offer, push capture."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient

from localrealtime.caller import sample_offer
from realtime import publish, services, sessions
from realtime.models import ApiKey, Call, CallEvent

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    # The local engine, served beside the site by `manage.py serve` on a port of its own.
    engine_url: str

    def engine(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call the embedded engine's own controls (/v1/_local/...)."""
        headers = {"Authorization": f"Bearer {settings.LOCALREALTIME_API_KEY}"}
        return httpx.request(method, f"{self.engine_url}/_local/{path}", headers=headers, timeout=10, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The test database, as a URL for the servers the tests start (SQLite file or PostgreSQL)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.postgresql":
        return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


def _port_of(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def start_server(tmp_dir: Path, *, extra_env: dict[str, str] | None = None, like: Server | None = None, wait: bool = True) -> Server:
    """Start `manage.py serve` (uvicorn, with the local engine beside it) on free loopback ports
    (or on the ports of `like`, to restart a server); with `wait`, return once both answer."""
    port = _port_of(like.url) if like else _free_port()
    engine_port = _port_of(like.engine_url) if like else _free_port()
    log = tmp_dir / f"server-{port}.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "iaposte.settings",
        "DEBUG": "true",
        "SECRET_KEY": "tests-only-not-secret",
        "DATABASE_URL": database_url(),
        "PORT": str(port),
        "LOCALREALTIME_PORT": str(engine_port),
        "OPENAI_API_KEY": "",
        "LOCALREALTIME_CONNECT_TIMEOUT": "20",
        # Sideband monitors would add upstream events to every test's calls; the tests of
        # monitoring turn them on (extra_env) in servers of their own.
        "REALTIME_MONITORS": "off",
        # The engine's SIP endpoint: a port of its own, so test servers never collide on 5070.
        "LOCALREALTIME_SIP_PORT": str(_free_port()),
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    engine_url = f"http://127.0.0.1:{engine_port}/v1"
    if not wait:
        return Server(url=url, process=process, log=log, engine_url=engine_url)
    deadline = time.monotonic() + 30
    while True:
        try:
            # Up once the API answers: 200 in local mode, 401 in production mode (no credentials),
            # 429 when a test's low rate limit is spent by these very polls.
            if httpx.get(f"{url}/api/realtime/stats", timeout=2).status_code in (200, 401, 429) and _engine_up(engine_url):
                return Server(url=url, process=process, log=log, engine_url=engine_url)
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the ASGI server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _engine_up(engine_url: str) -> bool:
    try:
        return httpx.get(engine_url, timeout=2).status_code == 404  # the engine's JSON 404 for /v1
    except httpx.HTTPError:
        return False


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(5)


# The tests of what PostgreSQL does differently (the advisory-lock capacity check, conditional
# UPDATE transitions under races, monitor leases, crash recovery, and every query plan check): `make test` runs them a second
# time on a real PostgreSQL (`-m postgresql`, DATABASE_URL set by deploy/servers.py).
POSTGRESQL_FILES = {
    "test_concurrency_limit.py",
    "test_call_setup_race.py",
    "test_api_end.py",
    "test_idempotency.py",
    "test_sweeper.py",
    "test_realtime_worker.py",
    "test_monitor_supervisor.py",
    "test_crash_recovery.py",
    "test_health.py",
    "test_call_filter_plans.py",
    "test_api_call_filters.py",
    "test_retention.py",
    "test_query_plans.py",
    "test_webhooks_query_plans.py",
    "test_admin_dashboard.py",
    "test_api_call_export.py",
    "test_call_quality.py",
    "test_db_thread_connection.py",
    # A transition is one statement on PostgreSQL, its parts one by one on SQLite (realtime.statements).
    "test_statements.py",
    "test_stats_counters.py",
    "test_webhooks_outbox.py",
    "test_api_create.py",
    "test_request_threads.py",
    "test_db_thread_pushes.py",
    "test_call_indexes.py",
    "test_sip_query_plans.py",
    # On PostgreSQL, a batch skips the events stored already as it inserts (ON CONFLICT).
    "test_services_record_events.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in POSTGRESQL_FILES:
            item.add_marker(pytest.mark.postgresql)


@pytest.fixture(scope="session", autouse=True)
def _close_strays(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """On PostgreSQL, end the test database's other sessions before it is dropped: connections
    opened by sync_to_async threads of async tests are never closed by Django."""
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(scope="session")
def asgi_server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("server"))
    yield server
    stop_server(server)


@pytest.fixture(autouse=True)
def _upstream(request: pytest.FixtureRequest, settings: Any) -> None:
    """Point the broker at the shared server's engine, for tests that talk upstream: those marked
    `upstream` and those using `asgi_server`. Others never start it (tests/settings.py points
    them at a port where nothing listens, so talking upstream unmarked fails loudly)."""
    if request.node.get_closest_marker("upstream") or "asgi_server" in request.fixturenames:
        settings.OPENAI_BASE_URL = request.getfixturevalue("asgi_server").engine_url


@pytest.fixture(autouse=True)
def _clear_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "asgi_server" in request.fixturenames:
        request.getfixturevalue("asgi_server").engine("DELETE", "faults")


@pytest.fixture(autouse=True)
def _fresh_throttles() -> Iterator[None]:
    """Throttle counters live in the cache; each test starts with none spent."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real Redis on a free loopback port (needs the redis-server Debian package)."""
    from deploy import servers

    redis = servers.start_redis(tmp_path)
    yield redis.url
    redis.stop()


@pytest.fixture(scope="session")
def sdp_offer() -> str:
    """A real offer from an aiortc caller (audio + the oai-events data channel)."""
    return asyncio.run(sample_offer())


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def pushes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every push that `realtime.publish.send` delivers after commit, in order."""
    sent: list[dict[str, Any]] = []

    def send(*, call_id: str, event: dict[str, Any], call: Any, api_key_id: int | None = None) -> None:
        # As subscribers receive them (the call rendered as the transition left it).
        event, shown = publish.rendered(event, call)
        sent.append({"call_id": call_id, "event": event, "call": shown, "api_key_id": api_key_id})

    monkeypatch.setattr("realtime.publish.send", send)
    # Batches of upstream events go out in one hop; counted here as one push per event.
    monkeypatch.setattr(
        "realtime.publish.send_batch",
        lambda *, call_id, events: sent.extend({"call_id": call_id, "event": e, "call": None} for e in events),
    )
    return sent


@pytest.fixture
def make_key() -> Callable[..., tuple[ApiKey, str]]:
    """A new API key and its raw value: make_key("name", expires_at=..., owner=...)."""

    def make(name: str = "integrator", **kwargs: Any) -> tuple[ApiKey, str]:
        key = ApiKey(name=name, **kwargs)
        return key, services.api_key_create(key, by=services.SYSTEM)

    return make


@pytest.fixture
def make_call(sdp_offer: str) -> Callable[..., Call]:
    """A pending call recorded through the service (nothing sent upstream), owned by `api_key`."""

    def make(api_key: ApiKey | None = None) -> Call:
        return services.call_open(
            offer=sdp_offer, session=sessions.parse_session({}), source=Call.Source.WEBRTC, actor=CallEvent.Actor.API, api_key=api_key
        )

    return make
