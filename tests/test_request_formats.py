"""Request formats on the real server: chunked bodies, form-encoded bodies, bad multipart boundaries."""

from __future__ import annotations

import socket

import httpx
import pytest
from rest_framework.test import APIClient

from realtime.models import Call

MULTIPART = b'--x\r\nContent-Disposition: form-data; name="sdp"\r\n\r\nv=0\r\n--x--\r\n'

pytestmark = pytest.mark.django_db(transaction=True)


def _raw_request(server_url: str, head: str, body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request written by hand (httpx always sends a length for a known body)."""
    host, port = server_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_it_refuses_a_chunked_create_without_length_in_our_shape(asgi_server, sdp_offer):
    payload = httpx.Request("POST", "http://x", json={"sdp": sdp_offer}).content
    chunked = f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
    head = (
        "POST /api/realtime/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )

    status, body = _raw_request(asgi_server.url, head, chunked)

    assert status == 411
    assert b'"code": "length_required"' in body, body
    assert not Call.objects.exists()


def test_it_refuses_a_form_encoded_create_with_415(asgi_server, sdp_offer):
    response = httpx.post(f"{asgi_server.url}/api/realtime/calls", data={"sdp": sdp_offer}, timeout=10)

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert not Call.objects.exists()


# Bad boundaries through Django's handler (daphne's HTTP layer, Twisted, answers some of them with a
# bare 400 before any application code runs: docs/api.md).
@pytest.mark.parametrize("boundary", ["", '""', "x" * 71, "a b"])
def test_it_answers_a_bad_multipart_boundary_in_our_shape(boundary):
    client = APIClient(raise_request_exception=False)
    response = client.generic("POST", "/api/realtime/calls", MULTIPART, content_type=f"multipart/form-data; boundary={boundary}")

    assert response.status_code in (400, 415)
    assert response.json()["success"] is False
    assert not Call.objects.exists()
