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

from localrealtime.caller import Caller
from realtime import services, sessions
from realtime.models import ApiKey, Call, CallEvent

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def engine_url(self) -> str:
        return f"{self.url}/v1"

    def engine(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call the embedded engine's own controls (/v1/_local/...)."""
        headers = {"Authorization": f"Bearer {settings.LOCALREALTIME_API_KEY}"}
        return httpx.request(method, f"{self.engine_url}/_local/{path}", headers=headers, timeout=10, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(tmp_dir: Path, *, extra_env: dict[str, str] | None = None, port: int | None = None) -> Server:
    """Start daphne serving the whole project (API + engine) on a free loopback port (or `port`, to restart one)."""
    port = port or _free_port()
    log = tmp_dir / f"server-{port}.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "iaposte.settings",
        "DEBUG": "true",
        "SECRET_KEY": "tests-only-not-secret",
        "DATABASE_URL": f"sqlite:///{settings.DATABASES['default']['NAME']}",
        "PORT": str(port),
        "OPENAI_API_KEY": "",
        "LOCALREALTIME_CONNECT_TIMEOUT": "20",
        # Sideband monitors would add upstream events to every test's calls; the tests of
        # monitoring turn them on (extra_env) in servers of their own.
        "REALTIME_MONITORS": "off",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "iaposte.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            # Up once the API answers: 200 in local mode, 401 in production mode (no credentials).
            if httpx.get(f"{url}/api/realtime/stats", timeout=2).status_code in (200, 401):
                return Server(url=url, process=process, log=log)
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the ASGI server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(5)


@pytest.fixture(scope="session")
def asgi_server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("server"))
    yield server
    stop_server(server)


@pytest.fixture(autouse=True)
def _upstream(request: pytest.FixtureRequest, settings: Any) -> None:
    """Point the broker at the test server's embedded engine, for tests that talk upstream."""
    if "no_upstream" not in request.keywords:
        server = request.getfixturevalue("asgi_server")
        settings.OPENAI_BASE_URL = server.engine_url


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


@pytest.fixture(scope="session")
def sdp_offer() -> str:
    """A real offer from an aiortc caller (audio + the oai-events data channel)."""

    async def make() -> str:
        caller = Caller()
        offer = await caller.offer()
        await caller.close()
        return offer

    return asyncio.run(make())


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def pushes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every push that `realtime.publish.send` delivers after commit, in order."""
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr("realtime.publish.send", lambda **kw: sent.append(kw))
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
