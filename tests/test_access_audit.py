"""Audit of access changes: keys created, revoked and expired, staff locked out; read-only in the admin."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from realtime import services, sweeper
from realtime.models import AccessAudit, ApiKey


@pytest.fixture
def boss(django_user_model):
    return django_user_model.objects.create_superuser("boss", "boss@example.test", "x")


@pytest.fixture
def boss_browser(boss) -> Client:
    client = Client(REMOTE_ADDR="192.0.2.10")
    client.force_login(boss)
    return client


def _records() -> list[tuple[str, str, str | None, int | None, str]]:
    return list(AccessAudit.objects.order_by("id").values_list("action", "actor", "address", "api_key_id", "username"))


@pytest.mark.django_db
def test_it_audits_a_key_created_and_revoked_in_the_admin_with_who_and_where(boss_browser, boss):
    boss_browser.post("/admin/realtime/apikey/add/", {"name": "crm", "owner": "", "expires_at_0": "", "expires_at_1": ""})
    key = ApiKey.objects.get()
    boss_browser.post("/admin/realtime/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]})
    boss_browser.post("/admin/realtime/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]})  # once only

    assert _records() == [
        ("key_created", "boss", "192.0.2.10", key.pk, ""),
        ("key_revoked", "boss", "192.0.2.10", key.pk, ""),
    ]
    assert set(AccessAudit.objects.values_list("user", flat=True)) == {boss.pk}
    key.refresh_from_db()
    assert AccessAudit.objects.get(action="key_revoked").at == key.revoked_at


@pytest.mark.django_db
def test_it_audits_keys_created_and_revoked_from_the_command_line():
    raw = StringIO()
    call_command("create_api_key", "ci", stdout=raw, stderr=StringIO())
    key = ApiKey.objects.get()
    call_command("revoke_api_key", key.prefix, stdout=StringIO())

    assert _records() == [("key_created", "manage.py", None, key.pk, ""), ("key_revoked", "manage.py", None, key.pk, "")]


@pytest.mark.django_db
def test_it_audits_an_expiry_once_across_sweeps(make_key):
    expired, _ = make_key("old", expires_at=timezone.now() - timedelta(seconds=1))
    make_key("fresh", expires_at=timezone.now() + timedelta(days=1))
    revoked, _ = make_key("revoked", expires_at=timezone.now() - timedelta(seconds=1))
    services.api_key_revoke(ApiKey.objects.filter(pk=revoked.pk), by=services.SYSTEM)
    AccessAudit.objects.all().delete()

    assert async_to_sync(sweeper.sweep_once)().api_keys_expired == 1
    assert async_to_sync(sweeper.sweep_once)().api_keys_expired == 0

    assert _records() == [("key_expired", "system", None, expired.pk, "")]
    assert AccessAudit.objects.get().at == expired.expires_at


@pytest.mark.django_db
def test_it_audits_a_staff_lockout_once(django_user_model, settings):
    django_user_model.objects.create_user("agent", "agent@example.test", "correct horse", is_staff=True)
    for _ in range(settings.AXES_FAILURE_LIMIT + 3):
        Client().post("/accounts/login/", {"username": "agent", "password": "wrong"}, REMOTE_ADDR="203.0.113.7")

    assert _records() == [("staff_locked_out", "agent", "203.0.113.7", None, "agent")]
    assert AccessAudit.objects.get().user == django_user_model.objects.get(username="agent")


@pytest.mark.django_db
def test_it_shows_the_audit_read_only_in_the_admin(boss_browser, make_key):
    key, _ = make_key("crm")
    record = AccessAudit.objects.get()

    listing = boss_browser.get("/admin/realtime/accessaudit/")
    assert listing.status_code == 200 and key.prefix in listing.content.decode()
    assert boss_browser.get("/admin/realtime/accessaudit/add/").status_code == 403
    assert boss_browser.post(f"/admin/realtime/accessaudit/{record.pk}/delete/", {"post": "yes"}).status_code == 403
    assert boss_browser.post(f"/admin/realtime/accessaudit/{record.pk}/change/", {"actor": "someone"}).status_code == 403
    assert AccessAudit.objects.get().actor == "system"
