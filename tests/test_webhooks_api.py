"""`/api/realtime/webhooks`: register (the secret shown once), list, change, delete, rotate, the
delivery log, send again, test events; keys see only their own endpoints; private addresses are
refused at registration with a 400 in our shape."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from realtime.webhooks.models import WebhookEndpoint, WebhookMessage

pytestmark = pytest.mark.django_db
URL = "http://127.0.0.1:9/hooks"


@pytest.fixture
def keyed(settings, make_key):
    """Two clients with API keys of their own (local mode off)."""
    settings.REALTIME_LOCAL_MODE = False

    def client(name: str) -> tuple[APIClient, object]:
        key, raw = make_key(name)
        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return c, key

    return client


def test_it_registers_an_endpoint_and_shows_its_secret_once(keyed):
    client, key = keyed("acme")

    response = client.post("/api/realtime/webhooks", {"url": URL, "events": ["call.ended", "call.created"]}, format="json")

    assert response.status_code == 201
    body = response.json()
    webhook = body["webhook"]
    assert body["success"] is True and webhook["url"] == URL and webhook["events"] == ["call.created", "call.ended"]
    assert webhook["secret"].startswith("whsec_") and webhook["api_key"] == key.prefix
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.pk, endpoint.secret, endpoint.api_key) == (webhook["id"], webhook["secret"], key)
    shown = client.get(f"/api/realtime/webhooks/{endpoint.pk}").json()["webhook"]
    assert "secret" not in shown and shown["id"] == endpoint.pk
    assert "secret" not in client.get("/api/realtime/webhooks").json()["data"][0]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/hooks",
        "http://192.168.1.20/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00::1]/hooks",
        "http://[::ffff:10.0.0.1]/hooks",
        "http://100.64.0.1/hooks",
        "http://224.0.0.1/hooks",
        "http://0.0.0.0/",
    ],
)
def test_it_refuses_a_private_address_at_registration(keyed, url):
    client, _ = keyed("acme")

    response = client.post("/api/realtime/webhooks", {"url": url, "events": ["call.ended"]}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["details"]) == ("webhook_url_refused", {"field": "url"})
    assert "public addresses only" in error["message"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize("url", [URL, "http://localhost:9/hooks", "http://[::1]:9/hooks"])
def test_it_refuses_loopback_unless_the_operator_allows_it(keyed, settings, url):
    client, _ = keyed("acme")
    settings.REALTIME_WEBHOOK_ALLOWED_NETWORKS = []

    response = client.post("/api/realtime/webhooks", {"url": url, "events": ["call.ended"]}, format="json")

    assert response.status_code == 400 and response.json()["error"]["code"] == "webhook_url_refused"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://127.0.0.1/x", "events": ["call.ended"]}, "url"),
        ({"url": "http://user:pw@127.0.0.1/x", "events": ["call.ended"]}, "url"),
        ({"url": URL, "events": ["call.exploded"]}, "events"),
        ({"url": URL, "events": []}, "events"),
        ({"url": URL, "events": ["call.ended"], "secret": "whsec_mine"}, "secret"),
    ],
)
def test_it_refuses_a_bad_endpoint_naming_the_field(keyed, body, field):
    client, _ = keyed("acme")

    response = client.post("/api/realtime/webhooks", body, format="json")

    assert response.status_code == 400
    assert response.json()["success"] is False and response.json()["error"]["details"]["field"].startswith(field)


def test_it_shows_a_key_only_its_own_endpoints(keyed):
    acme, _ = keyed("acme")
    other, _ = keyed("other")
    mine = acme.post("/api/realtime/webhooks", {"url": URL, "events": ["call.ended"]}, format="json").json()["webhook"]["id"]

    assert other.get("/api/realtime/webhooks").json() == {"success": True, "data": [], "count": 0}
    for method, path in [
        ("get", f"/api/realtime/webhooks/{mine}"),
        ("patch", f"/api/realtime/webhooks/{mine}"),
        ("delete", f"/api/realtime/webhooks/{mine}"),
        ("post", f"/api/realtime/webhooks/{mine}/rotate_secret"),
        ("get", f"/api/realtime/webhooks/{mine}/deliveries"),
        ("post", f"/api/realtime/webhooks/{mine}/test"),
    ]:
        response = getattr(other, method)(path, {}, format="json")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
    assert acme.get("/api/realtime/webhooks").json()["count"] == 1
    assert WebhookEndpoint.objects.count() == 1 and not WebhookMessage.objects.exists()


def test_it_shows_staff_every_endpoint_with_the_model_permissions(keyed, django_user_model):
    acme, _ = keyed("acme")
    acme.post("/api/realtime/webhooks", {"url": URL, "events": ["call.ended"]}, format="json")
    user = django_user_model.objects.create_user("ops", is_staff=True)
    staff = APIClient()
    staff.force_login(user)
    assert staff.get("/api/realtime/webhooks").status_code == 403

    user.user_permissions.set(Permission.objects.filter(codename__in=["view_webhookendpoint", "add_webhookendpoint"]))
    staff = APIClient()
    staff.force_login(user)

    assert staff.get("/api/realtime/webhooks").json()["count"] == 1
    created = staff.post("/api/realtime/webhooks", {"url": URL, "events": ["call.failed"]}, format="json")
    assert created.status_code == 201 and created.json()["webhook"]["api_key"] is None
    assert staff.delete(f"/api/realtime/webhooks/{created.json()['webhook']['id']}").status_code == 403
    assert APIClient().get("/api/realtime/webhooks").status_code == 401


def test_it_changes_rotates_and_deletes_an_endpoint(keyed):
    client, _ = keyed("acme")
    webhook = client.post("/api/realtime/webhooks", {"url": URL, "events": ["call.ended"]}, format="json").json()["webhook"]
    path = f"/api/realtime/webhooks/{webhook['id']}"

    changed = client.patch(path, {"events": ["call.failed", "call.ended"], "enabled": False}, format="json").json()["webhook"]
    assert (changed["events"], changed["enabled"], changed["disabled_reason"]) == (["call.ended", "call.failed"], False, "disabled by hand")
    assert client.patch(path, {"url": "http://10.1.2.3/"}, format="json").status_code == 400

    rotated = client.post(f"{path}/rotate_secret", {"overlap_hours": 2}, format="json").json()["webhook"]
    endpoint = WebhookEndpoint.objects.get()
    assert rotated["secret"] == endpoint.secret != webhook["secret"] == endpoint.previous_secret
    assert endpoint.signing_secrets() == [rotated["secret"], webhook["secret"]]

    assert client.delete(path).json() == {"success": True, "message": "Webhook endpoint deleted"}
    assert not WebhookEndpoint.objects.exists()


def test_it_queues_a_test_event_and_lists_it_in_the_delivery_log(keyed):
    client, _ = keyed("acme")
    webhook = client.post("/api/realtime/webhooks", {"url": URL, "events": ["call.ended"]}, format="json").json()["webhook"]
    path = f"/api/realtime/webhooks/{webhook['id']}"

    queued = client.post(f"{path}/test")

    assert queued.status_code == 202
    message = WebhookMessage.objects.get()
    assert (message.event_type, message.payload["type"], message.payload["data"]["webhook_id"]) == (
        "webhook.test",
        "webhook.test",
        webhook["id"],
    )
    log = client.get(f"{path}/deliveries").json()
    assert log["count"] == 1 and log["data"][0]["id"] == message.message_id == queued.json()["delivery"]["id"]
    assert log["data"][0]["status"] == "pending" and log["data"][0]["attempts"] == 0
    assert client.get(f"{path}/deliveries?status=delivered").json()["count"] == 0
    assert client.get(f"{path}/deliveries?status=lost").status_code == 400

    # Still pending: "send again" is a conflict; once failed, it is queued again under the same id.
    resend = f"{path}/deliveries/{message.message_id}/resend"
    assert client.post(resend).status_code == 409
    WebhookMessage.objects.update(status="failed", next_attempt_at=None)
    again = client.post(resend)
    assert again.status_code == 202 and again.json()["delivery"]["status"] == "pending"
    assert client.post(f"{path}/deliveries/msg_unknown/resend").status_code == 404


def test_it_answers_unknown_ids_with_our_404(keyed):
    client, _ = keyed("acme")

    for path in ["/api/realtime/webhooks/abc", "/api/realtime/webhooks/99", "/api/realtime/webhooks/%F0%93%94%BE/deliveries"]:
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
