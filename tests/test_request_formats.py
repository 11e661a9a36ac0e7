"""Request formats on the real server: chunked bodies, form-encoded bodies, bad multipart boundaries."""

from __future__ import annotations

import socket

import httpx
import pytest

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


# Malformed multipart bodies on the real server: Django's parsers, not the server, answer them (in the
# API's error shape).
BAD_MULTIPART = {
    "no boundary": ("multipart/form-data", MULTIPART),
    "empty boundary": ("multipart/form-data; boundary=", MULTIPART),
    "quoted empty boundary": ('multipart/form-data; boundary=""', MULTIPART),
    "boundary too long": ("multipart/form-data; boundary=" + "x" * 71, MULTIPART),
    "boundary with a space": ("multipart/form-data; boundary=a b", MULTIPART),
    "other boundary in the body": ("multipart/form-data; boundary=y", MULTIPART),
    "no closing boundary": ("multipart/form-data; boundary=x", MULTIPART.removesuffix(b"--x--\r\n")),
    "part without headers": ("multipart/form-data; boundary=x", b"--x\r\n\r\nv=0\r\n--x--\r\n"),
    "part without a name": ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\nv=0\r\n--x--\r\n"),
    "not multipart at all": ("multipart/form-data; boundary=x", b"v=0\r\n"),
    "binary garbage": ("multipart/form-data; boundary=x", bytes(range(256))),
    "mixed, not form-data": ("multipart/mixed; boundary=x", MULTIPART),
}


@pytest.mark.parametrize("label", list(BAD_MULTIPART))
def test_it_answers_a_malformed_multipart_body_in_our_shape_on_the_real_server(asgi_server, label):
    content_type, body = BAD_MULTIPART[label]
    start = len(asgi_server.log.read_text(errors="replace"))

    response = httpx.post(f"{asgi_server.url}/api/realtime/calls", content=body, headers={"Content-Type": content_type}, timeout=10)

    assert response.status_code in (400, 415), response.content
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert response.json()["success"] is False and set(error) == {"code", "message", "details"}
    assert error["code"] in ("malformed_request", "invalid_sdp", "invalid_request", "unsupported_media_type"), error
    assert not Call.objects.exists()
    assert "Traceback" not in asgi_server.log.read_text(errors="replace")[start:]


def test_it_still_reads_a_well_formed_multipart_create_on_the_real_server(asgi_server, sdp_offer):
    response = httpx.post(f"{asgi_server.url}/api/realtime/calls", files={"sdp": ("offer.sdp", sdp_offer.encode())}, timeout=30)

    assert response.status_code == 201, response.content
    assert Call.objects.get().call_id == response.json()["call_id"]
    httpx.delete(f"{asgi_server.url}/api/realtime/calls/{response.json()['call_id']}", timeout=30)
