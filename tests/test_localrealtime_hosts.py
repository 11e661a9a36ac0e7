"""The local engine answers only to its own host names (loopback, ALLOWED_HOSTS): a page rebinding
its DNS name to 127.0.0.1 cannot script it with the public default key. Against the real engine
server (uvicorn) that the test server runs."""

from __future__ import annotations

import base64
import os
import socket

import httpx
import pytest
from django.conf import settings

REBIND = "rebind.attacker.example"


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.LOCALREALTIME_API_KEY}"}


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_rebound_host_scripting_faults(asgi_server):
    refused = httpx.post(
        f"{asgi_server.engine_url}/_local/faults", json={"op": "create", "status": 500}, headers={**_auth(), "Host": REBIND}, timeout=10
    )

    assert refused.status_code == 400
    assert refused.json() == {
        "error": {"message": "Invalid host header.", "type": "invalid_request_error", "param": "Host", "code": "invalid_host"}
    }
    # Nothing was scripted.
    assert asgi_server.engine("GET", "faults").json() == {"data": []}


@pytest.mark.parametrize("host", [REBIND, f"{REBIND}:80", "127.0.0.1.attacker.example", ""])
@pytest.mark.django_db(transaction=True)
def test_it_refuses_every_path_from_a_foreign_host(asgi_server, host):
    response = httpx.post(f"{asgi_server.engine_url}/realtime/calls", headers={**_auth(), "Host": host}, timeout=10)

    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_host")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
@pytest.mark.django_db(transaction=True)
def test_it_answers_its_loopback_names_with_any_port(asgi_server, host):
    port = asgi_server.engine_url.split(":")[2].split("/")[0]
    listed = httpx.get(f"{asgi_server.engine_url}/_local/faults", headers={**_auth(), "Host": f"{host}:{port}"}, timeout=10)

    assert (listed.status_code, listed.json()) == (200, {"data": []})


def _handshake(engine_url: str, host: str) -> str:
    """The status the engine answers a sideband WebSocket handshake with, sent as `host`
    (by hand: WebSocket clients send the Host of the URL they connect to)."""
    address = engine_url.split("//")[1].split("/")[0]
    name, port = address.rsplit(":", 1)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /v1/realtime?call_id=rtc_unknown HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {settings.LOCALREALTIME_API_KEY}\r\n\r\n"
    )
    with socket.create_connection((name, int(port)), timeout=10) as connection:
        connection.sendall(request.encode())
        return connection.recv(4096).split(b"\r\n", 1)[0].decode().split()[1]


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_sideband_socket_from_a_foreign_host(asgi_server):
    port = asgi_server.engine_url.split(":")[2].split("/")[0]

    # A foreign host is refused before the handshake; a loopback one reaches the sideband (404: no such call).
    assert _handshake(asgi_server.engine_url, REBIND) == "403"
    assert _handshake(asgi_server.engine_url, f"localhost:{port}") == "404"
