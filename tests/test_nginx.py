"""nginx in front of a real web process (deploy/nginx, run unprivileged on a free port): bodies over
the cap refused before a web process sees a byte (413 in our shape), slow headers timed out, the client's
real address passed and believed only from nginx, WebSocket upgrades, static files.
Needs Debian's nginx (`.ci/run` installs it)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from deploy import servers

from .conftest import ROOT, Server, start_server, stop_server

# django_db: the web process behind nginx uses the test database, which must then exist (and
# not be held in a test transaction).
pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def fronted(django_db_setup: None, django_db_blocker: Any) -> Iterator[tuple[Server, servers.Running]]:
    folder = Path(tempfile.mkdtemp(prefix="iaposte-nginx-"))
    servers._give_to_server_user(folder)
    env = {"REALTIME_TRUSTED_PROXIES": "127.0.0.1", "REALTIME_THROTTLE_ANONYMOUS": "3/min"}
    web = start_server(folder, extra_env=env)
    # nginx serves what collectstatic gathers (as `make run` and `make run-scaled` do).
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env={**os.environ, "DEBUG": "true"}, check=True
    )
    nginx = servers.start_nginx(folder / "nginx", servers.free_port(), [int(web.url.rsplit(":", 1)[1])], ROOT / "staticfiles")
    yield web, nginx
    nginx.stop()
    stop_server(web)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _posts_seen_by_the_web_process(web: Server) -> int:
    return web.log.read_text(errors="replace").count("POST /api/realtime/calls")


def _client(source: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10)


def test_it_refuses_a_300_mib_body_before_it_reaches_a_web_process(fronted):
    web, nginx = fronted
    before_rss, before_posts = _rss_kib(web.process.pid), _posts_seen_by_the_web_process(web)

    def body() -> Iterator[bytes]:
        chunk = b"x" * (1024 * 1024)
        for _ in range(300):
            yield chunk

    # Announced (Content-Length) and streamed (chunked) alike.
    announced = httpx.post(
        f"{nginx.url}/api/realtime/calls", content=body(), headers={"Content-Length": str(300 * 1024 * 1024)}, timeout=60
    )
    streamed = httpx.post(f"{nginx.url}/api/realtime/calls", content=body(), timeout=60)

    for response in (announced, streamed):
        assert response.status_code == 413
        assert response.headers["Content-Type"] == "application/json"
        assert response.json() == {
            "success": False,
            "error": {
                "code": "payload_too_large",
                "message": "Le corps de la requête est trop volumineux.",
                "details": {"max_bytes": 327680},
            },
        }
    assert _posts_seen_by_the_web_process(web) == before_posts
    # Nothing was buffered by the web process (a few MiB of ordinary churn at most).
    assert _rss_kib(web.process.pid) - before_rss < 8 * 1024


def test_it_answers_413_in_english_to_an_english_client(fronted):
    _, nginx = fronted
    response = httpx.post(f"{nginx.url}/api/realtime/calls", content=b"x" * 400_000, headers={"Accept-Language": "en"})
    assert response.status_code == 413
    assert response.json()["error"]["message"] == "The request body is too large."


def test_it_closes_a_connection_whose_headers_trickle(fronted):
    _, nginx = fronted
    port = int(nginx.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"GET /api/realtime/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.settimeout(30)
        started = time.monotonic()
        # client_header_timeout (10 s): nginx gives up on the request and closes the connection.
        closed = slow.recv(1024) == b""
        waited = time.monotonic() - started
    assert closed and waited < 25
    # Meanwhile and after, others are served.
    assert httpx.get(f"{nginx.url}/api/realtime/stats", timeout=10).status_code in (200, 429)


def test_it_throttles_each_real_client_address_behind_nginx(fronted):
    web, nginx = fronted
    with _client("127.0.0.2") as first, _client("127.0.0.3") as second:
        url = f"{nginx.url}/api/realtime/stats"
        # A client cannot choose its address: nginx overwrites X-Real-IP.
        spoofed = {"X-Real-IP": "127.0.0.9", "X-Forwarded-For": "127.0.0.9"}
        statuses = [first.get(url, headers=spoofed).status_code for _ in range(4)]
        other = second.get(url).status_code
    assert statuses == [200, 200, 200, 429]
    assert other == 200

    # Straight to the web process, from an address that is not the proxy: the header is not believed.
    with _client("127.0.0.4") as direct:
        statuses = [direct.get(f"{web.url}/api/realtime/stats", headers={"X-Real-IP": f"127.0.1.{i}"}).status_code for i in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_it_passes_websocket_upgrades(fronted, sdp_offer):
    _, nginx = fronted
    ws_url = nginx.url.replace("http://", "ws://")

    async def pushed() -> dict[str, Any]:
        async with (
            websockets.connect(f"{ws_url}/ws/realtime/calls", origin=nginx.url, open_timeout=10) as feed,
            httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.5"), timeout=30) as http,
        ):
            created = await http.post(f"{nginx.url}/api/realtime/calls", json={"sdp": sdp_offer})
            assert created.status_code == 201, created.text
            await http.delete(f"{nginx.url}/api/realtime/calls/{created.json()['call_id']}")
            return dict(json.loads(await asyncio.wait_for(feed.recv(), timeout=10)))

    message = asyncio.run(pushed())
    assert (message["type"], message["event"]["event_type"]) == ("call.changed", "call.created")
    assert message["call"]["status"] == "pending"


def test_it_serves_static_files_itself(fronted):
    web, nginx = fronted
    response = httpx.get(f"{nginx.url}/static/realtime/realtime-api.js")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/javascript"
    assert "GET /static/" not in web.log.read_text(errors="replace")
