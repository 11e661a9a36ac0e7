"""POST /api/realtime/sip/webhook: OpenAI's signed `realtime.call.incoming`, verified before anything is read or stored."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from localrealtime.sip.webhook import call_incoming, sign
from realtime import sip
from realtime.models import Call, CallEvent, SipRoute, WebhookDelivery

SECRET = "whsec_RdvaYFYUXuIFuEbvZHwMfYFhUf7aMYjYcmM24+Aj40c="
OLD_SECRET = "whsec_b2xkLXNlY3JldC1zdGlsbC12YWxpZC1mb3ItMjRo"
HEADERS = [
    {"name": "From", "value": '"+33 1 40 00 00 01" <sip:+33140000001@pstn.example.com:5060>;tag=a1'},
    {"name": "To", "value": "<sip:+33180000002@sip.api.openai.com>"},
    {"name": "X-Customer-Id", "value": "<script>alert(1)</script>"},
]


@pytest.fixture(autouse=True)
def _secrets(settings: Any) -> None:
    settings.OPENAI_WEBHOOK_SECRETS = [SECRET, OLD_SECRET]


def _signed(event: dict[str, Any], *, secret: str = SECRET, webhook_id: str = "wh_1", timestamp: int | None = None) -> dict[str, Any]:
    body = json.dumps(event).encode()
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "data": body,
        "content_type": "application/json",
        "headers": {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret=secret, webhook_id=webhook_id, timestamp=timestamp, body=body),
        },
    }


async def _post(**request: Any) -> Any:
    response = await AsyncClient().post("/api/realtime/sip/webhook", **request)
    # The decision runs after the answer, on this loop: let it finish before asserting.
    await asyncio.gather(*sip._tasks)
    return response


def test_it_signs_as_openai_does():
    # The SDK's own test vector (Standard Webhooks): our engine's signatures are OpenAI's.
    body = b'{"id": "evt_685c059ae3a481909bdc86819b066fb6", "object": "event", "created_at": 1750861210, "type": "response.completed", "data": {"id": "resp_123"}}'
    signature = sign(secret=SECRET, webhook_id="wh_685c059ae39c8190af8c71ed1022a24d", timestamp=1750861210, body=body)
    assert signature == "v1,gUAg4R2hWouRZqRQG4uJypNS8YK885G838+EHb4nKBY="


@pytest.mark.upstream
@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_records_an_incoming_call_once_and_carries_out_its_route(pushes):
    await sync_to_async(SipRoute.objects.create)(name="Support", called_pattern="+3318*", session={"voice": "coral"})
    event = call_incoming(call_id="rtc_gone", sip_headers=HEADERS)

    response = await _post(**_signed(event))

    assert response.status_code == 200 and response.json() == {"success": True, "result": "incoming"}
    call = await Call.objects.select_related("sip_route").aget()
    assert (call.source, call.upstream_id, call.voice) == (Call.Source.SIP, "rtc_gone", "coral")
    # Caller and called come from From/To, as text; the other headers are kept as they came.
    assert (call.sip_caller, call.sip_called, call.sip_route.name) == ("+33140000001", "+33180000002", "Support")
    assert call.sip_headers == HEADERS
    # The engine knows no rtc_gone: accept answers 404, as OpenAI does when the caller hung up.
    assert (call.status, call.end_reason) == (Call.Status.ENDED, Call.EndReason.MISSED)
    events = [e async for e in CallEvent.objects.filter(call=call).order_by("id").values_list("event_type", flat=True)]
    assert events == ["call.incoming", "call.ended", "upstream.hangup"]
    assert [p["event"]["event_type"] for p in pushes] == ["call.incoming", "call.ended", "upstream.hangup"]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_ignores_a_replayed_webhook():
    request = _signed(call_incoming(call_id="rtc_once", sip_headers=HEADERS), webhook_id="wh_same")
    await _post(**request)

    response = await _post(**request)

    assert response.status_code == 200 and response.json()["result"] == "duplicate"
    assert await Call.objects.acount() == 1 and await WebhookDelivery.objects.acount() == 1


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_accepts_the_previous_secret_during_a_rotation():
    response = await _post(**_signed(call_incoming(call_id="rtc_rotated", sip_headers=HEADERS), secret=OLD_SECRET))

    assert response.status_code == 200 and await Call.objects.filter(upstream_id="rtc_rotated").aexists()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_answers_2xx_to_event_types_it_does_not_handle_and_stores_nothing():
    event = {"object": "event", "id": "evt_1", "type": "live.call.incoming", "created_at": 1, "data": {"call_id": "live_1"}}

    response = await _post(**_signed(event))

    assert response.status_code == 200 and response.json()["result"] == "ignored"
    assert not await Call.objects.aexists() and not await WebhookDelivery.objects.aexists()


def _forged(request: dict[str, Any], case: str) -> dict[str, Any]:
    headers = dict(request["headers"])
    if case == "wrong secret":
        return _signed(json.loads(request["data"]), secret="whsec_d3Jvbmctc2VjcmV0")
    if case == "too old":
        return _signed(json.loads(request["data"]), timestamp=int(time.time()) - 301)
    if case == "tampered body":
        return {**request, "data": request["data"].replace(b"rtc_forged", b"rtc_other0")}
    if case == "no signature":
        del headers["webhook-signature"]
    if case == "no id":
        del headers["webhook-id"]
    return {**request, "headers": headers}


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["wrong secret", "too old", "tampered body", "no signature", "no id"])
def test_it_refuses_a_webhook_not_signed_by_openai_before_touching_the_database(case, client, django_assert_num_queries):
    request = _forged(_signed(call_incoming(call_id="rtc_forged", sip_headers=HEADERS)), case)

    with django_assert_num_queries(0):
        response = client.post("/api/realtime/sip/webhook", **request)

    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "invalid_webhook_signature"


@pytest.mark.django_db
def test_it_refuses_an_oversized_body_unread(client, settings, django_assert_num_queries):
    settings.REALTIME_SIP_WEBHOOK_MAX_BYTES = 1000
    event = call_incoming(call_id="rtc_big", sip_headers=[{"name": "X-Pad", "value": "x" * 2000}])

    with django_assert_num_queries(0):
        response = client.post("/api/realtime/sip/webhook", **_signed(event))

    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.django_db
def test_it_answers_only_post(client):
    response = client.get("/api/realtime/sip/webhook")
    assert (response.status_code, response["Allow"], response.json()["error"]["code"]) == (405, "POST", "method_not_allowed")


@pytest.mark.django_db
def test_a_fresh_install_answers_every_call_with_its_default_route():
    # Created by the migration: a phone call to a new install is answered, not refused.
    route = SipRoute.objects.get()
    assert (route.action, route.enabled, route.called_pattern, route.session) == ("accept", True, "", {})


@pytest.mark.django_db
def test_the_sweeper_forgets_deliveries_past_openais_retry_window():
    from datetime import timedelta

    from django.utils import timezone

    from realtime.sweeper import forget_webhook_deliveries

    now = timezone.now()
    WebhookDelivery.objects.create(webhook_id="wh_old", event_type="realtime.call.incoming", received_at=now - timedelta(hours=73))
    WebhookDelivery.objects.create(webhook_id="wh_recent", event_type="realtime.call.incoming", received_at=now - timedelta(hours=71))

    assert forget_webhook_deliveries(now=now) == 1
    assert list(WebhookDelivery.objects.values_list("webhook_id", flat=True)) == ["wh_recent"]
