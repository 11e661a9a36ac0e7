"""A bad Host header or an unknown WebSocket path: a clean refusal, one log line, no traceback."""

from __future__ import annotations

import httpx
import pytest
import websockets


def _log_since(server, start: int) -> str:
    return server.log.read_text(errors="replace")[start:]


@pytest.mark.django_db
def test_it_answers_a_bad_host_under_the_api_with_our_json_400(client):
    response = client.get("/api/realtime/calls", HTTP_HOST="rebind.attacker.example")

    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": {"code": "bad_host", "message": "This server does not answer to that host name.", "details": {}},
    }


@pytest.mark.django_db
def test_it_answers_a_bad_host_in_the_language_asked_not_the_previous_requests(client):
    client.get("/api/realtime/stats", HTTP_ACCEPT_LANGUAGE="fr")

    english = client.get("/api/realtime/calls", HTTP_HOST="rebind.attacker.example", HTTP_ACCEPT_LANGUAGE="en")
    french = client.get("/api/realtime/calls", HTTP_HOST="rebind.attacker.example", HTTP_ACCEPT_LANGUAGE="fr")

    assert english.json()["error"]["message"] == "This server does not answer to that host name."
    assert french.json()["error"]["message"] == "Ce serveur ne répond pas à ce nom d’hôte."


@pytest.mark.django_db(transaction=True)
def test_it_logs_a_bad_host_without_a_traceback_on_the_real_server(asgi_server):
    start = len(asgi_server.log.read_text(errors="replace"))

    api = httpx.get(f"{asgi_server.url}/api/realtime/stats", headers={"Host": "rebind.attacker.example"}, timeout=10)
    page = httpx.get(f"{asgi_server.url}/accounts/login/", headers={"Host": "rebind.attacker.example"}, timeout=10)

    assert (api.status_code, api.json()["error"]["code"]) == (400, "bad_host")
    assert page.status_code == 400
    log = _log_since(asgi_server, start)
    assert "Traceback" not in log
    assert log.count("Invalid HTTP_HOST header") == 2


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/ws/nope", "/", "/ws/realtime/calls/x/y"])
async def test_it_refuses_a_websocket_to_an_unknown_path_without_a_traceback(asgi_server, path):
    start = len(asgi_server.log.read_text(errors="replace"))
    url = asgi_server.url.replace("http://", "ws://") + path

    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, open_timeout=10):
            pass

    assert refused.value.response.status_code == 403
    log = _log_since(asgi_server, start)
    assert "Traceback" not in log and "No route found" not in log
