"""Webhooks in the admin: endpoints (checked like the API, the secret shown once, a notice when one
was disabled for failing), "send a test event", and the delivery log's "send again"."""

from __future__ import annotations

import pytest

from realtime.webhooks import services as webhook_services
from realtime.webhooks.models import WebhookEndpoint, WebhookMessage

ENDPOINTS = "/admin/realtime/webhookendpoint/"
DELIVERIES = "/admin/realtime/webhookmessage/"


@pytest.mark.django_db
def test_it_adds_an_endpoint_showing_its_secret_once_and_refuses_a_private_address(admin_client):
    form = {"url": "http://10.0.0.7/hooks", "description": "", "events": ["call.ended"], "enabled": "on"}

    refused = admin_client.post(f"{ENDPOINTS}add/", form)

    assert refused.status_code == 200 and "public addresses only" in refused.content.decode()
    assert not WebhookEndpoint.objects.exists()
    form["url"] = "http://127.0.0.1:9/hooks"
    added = admin_client.post(f"{ENDPOINTS}add/", form, follow=True)
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.url, endpoint.events, endpoint.api_key) == ("http://127.0.0.1:9/hooks", ["call.ended"], None)
    assert endpoint.secret in added.content.decode()
    assert endpoint.secret not in admin_client.get(f"{ENDPOINTS}{endpoint.pk}/change/").content.decode()


@pytest.mark.django_db
def test_it_notices_an_endpoint_disabled_for_failing(admin_client):
    endpoint = webhook_services.endpoint_create(url="http://127.0.0.1:9/hooks", events=["call.ended"], api_key=None)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=False, disabled_at="2026-01-01T00:00Z", disabled_reason="15 failed attempts"
    )

    page = admin_client.get(ENDPOINTS).content.decode()

    assert "is disabled (15 failed attempts)" in page
    admin_client.post(ENDPOINTS, {"action": "enable", "_selected_action": [endpoint.pk]})
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.disabled_reason == ""
    assert "is disabled" not in admin_client.get(ENDPOINTS).content.decode()


@pytest.mark.django_db
def test_it_sends_a_test_event_and_sends_a_delivery_again(admin_client):
    endpoint = webhook_services.endpoint_create(url="http://127.0.0.1:9/hooks", events=["call.ended"], api_key=None)

    admin_client.post(ENDPOINTS, {"action": "send_test_event", "_selected_action": [endpoint.pk]})

    message = WebhookMessage.objects.get()
    assert (message.endpoint, message.event_type, message.status) == (endpoint, "webhook.test", "pending")
    log = admin_client.get(DELIVERIES).content.decode()
    assert message.message_id in log
    WebhookMessage.objects.update(status="failed", next_attempt_at=None)
    admin_client.post(DELIVERIES, {"action": "send_again", "_selected_action": [message.pk]})
    message.refresh_from_db()
    assert message.status == "pending" and message.next_attempt_at is not None
