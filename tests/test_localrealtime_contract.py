"""The embedded engine speaks OpenAI's GA contract: auth, multipart, errors, Location ids, hangup."""

from __future__ import annotations

import json

import httpx
import pytest
from django.conf import settings


def _post(server, *, files=None, data=None, key: str | None = None, content: bytes | None = None, headers: dict | None = None):
    auth = {"Authorization": f"Bearer {key or settings.LOCALREALTIME_API_KEY}"}
    return httpx.post(
        f"{server.engine_url}/realtime/calls", files=files, data=data, content=content, headers=auth | (headers or {}), timeout=10
    )


def _parts(offer: str, session: dict | None = None) -> dict:
    parts = {"sdp": (None, offer, "application/sdp")}
    if session is not None:
        parts["session"] = (None, json.dumps(session), "application/json")
    return parts


@pytest.mark.django_db(transaction=True)
def test_it_answers_201_with_an_sdp_answer_and_a_location(asgi_server, sdp_offer):
    response = _post(asgi_server, files=_parts(sdp_offer, {"type": "realtime", "model": "gpt-realtime"}))

    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/sdp")
    assert response.text.startswith("v=0") and "a=fingerprint:" in response.text and "a=setup:" in response.text
    location = response.headers["location"]
    assert location.startswith("/v1/realtime/calls/rtc_u1_")
    call_id = location.rsplit("/", 1)[-1]
    hangup = httpx.post(
        f"{asgi_server.engine_url}/realtime/calls/{call_id}/hangup", headers={"Authorization": f"Bearer {settings.LOCALREALTIME_API_KEY}"}
    )
    assert hangup.status_code == 200 and hangup.content == b""


@pytest.mark.django_db(transaction=True)
def test_it_accepts_parts_without_a_content_type(asgi_server, sdp_offer):
    # The official Node example sends bare FormData strings, with no per-part Content-Type.
    response = _post(asgi_server, files={"sdp": (None, sdp_offer), "session": (None, json.dumps({"type": "realtime"}))})

    assert response.status_code == 201


@pytest.mark.django_db(transaction=True)
def test_it_refuses_unknown_form_fields(asgi_server, sdp_offer):
    response = _post(asgi_server, files=_parts(sdp_offer) | {"model": (None, "gpt-realtime")})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_wrong_key_with_401(asgi_server, sdp_offer):
    response = _post(asgi_server, files=_parts(sdp_offer), key="sk-wrong-key-123456")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"type": "realtime", "modalities": ["text", "audio"]}, "session.modalities"),
        ({"type": "realtime", "voice": "alloy"}, "session.voice"),
        ({"type": "realtime", "temperature": 0.8}, "session.temperature"),
        ({"model": "gpt-realtime"}, "session.type"),
        ({"type": "realtime", "model": "gpt-4o-realtime-preview"}, "session.model"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_it_refuses_beta_shaped_sessions_like_openai(asgi_server, sdp_offer, session, param):
    response = _post(asgi_server, files=_parts(sdp_offer, session))

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_bad_offer_with_invalid_offer(asgi_server):
    response = _post(asgi_server, files=_parts("v=0\r\nnot an offer\r\n"))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_offer"


@pytest.mark.django_db(transaction=True)
def test_it_refuses_raw_sdp_with_a_standard_key(asgi_server, sdp_offer):
    response = _post(asgi_server, content=sdp_offer.encode(), headers={"Content-Type": "application/sdp"})

    assert response.status_code == 400


@pytest.mark.django_db(transaction=True)
def test_it_answers_404_when_hanging_up_an_unknown_call(asgi_server):
    response = httpx.post(
        f"{asgi_server.engine_url}/realtime/calls/rtc_u1_unknown/hangup",
        headers={"Authorization": f"Bearer {settings.LOCALREALTIME_API_KEY}"},
    )

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "call_not_found"


@pytest.mark.asyncio
async def test_it_keeps_idle_connections_open_longer_than_the_sdk_reuses_them():
    import openai

    from localrealtime import server

    # The SDK's pool reuses a connection idle for less than its expiry; were the engine to close
    # idle connections as soon, a create could go out on one being closed, and fail unretried.
    client = openai.DefaultAsyncHttpxClient()
    try:
        sdk_expiry = client._transport._pool._keepalive_expiry  # type: ignore[attr-defined]
    finally:
        await client.aclose()
    assert sdk_expiry is not None
    assert server.config("127.0.0.1", 0).timeout_keep_alive >= 2 * sdk_expiry
