"""Creating and revoking keys: `manage.py create_api_key` / `revoke_api_key` and the admin."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from realtime import services
from realtime.models import ApiKey, hash_api_key

KEY = re.compile(r"iap_[A-Za-z0-9_-]{43}")


def _command(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue().strip()


@pytest.mark.django_db
def test_it_creates_a_key_from_the_command_line_and_prints_it_alone(django_user_model):
    owner = django_user_model.objects.create_user("integration-team")

    raw, description = _command("create_api_key", "standard téléphonique", "--owner", "integration-team", "--expires-in-days", "30")

    assert KEY.fullmatch(raw)
    key = ApiKey.objects.get()
    assert (key.name, key.owner, key.prefix, key.key_hash) == ("standard téléphonique", owner, raw[:12], hash_api_key(raw))
    assert timedelta(days=29, hours=23) < key.expires_at - timezone.now() <= timedelta(days=30)
    assert description.startswith(f"Created API key {key.prefix}… (standard téléphonique, expires ")
    assert raw not in description


@pytest.mark.django_db
def test_it_creates_a_key_that_works_on_the_api(settings):
    settings.REALTIME_LOCAL_MODE = False
    raw, _ = _command("create_api_key", "ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert client.get("/api/realtime/calls").status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [(("x", "--owner", "nobody"), "No user named 'nobody'."), (("x", "--expires-in-days", "0"), "at least 1"), (("  ",), "1 to 100")],
)
@pytest.mark.django_db
def test_it_refuses_bad_command_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        _command("create_api_key", *args)
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_it_revokes_a_key_by_prefix_once(make_key):
    key, _ = make_key("old")

    first, _ = _command("revoke_api_key", key.prefix)
    key.refresh_from_db()
    revoked_at = key.revoked_at
    second, _ = _command("revoke_api_key", key.prefix + "…")
    key.refresh_from_db()

    assert first == f"Revoked {key}."
    assert second == f"{key} was already revoked."
    assert revoked_at is not None and key.revoked_at == revoked_at
    with pytest.raises(CommandError, match="No API key with prefix"):
        _command("revoke_api_key", "iap_unknown0")


# --- admin ------------------------------------------------------------------------------------


@pytest.fixture
def admin_browser(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("boss", "boss@example.test", "pw"))
    return client


@pytest.mark.django_db
def test_it_shows_a_key_created_in_the_admin_once(admin_browser):
    response = admin_browser.post("/admin/realtime/apikey/add/", {"name": "crm", "owner": "", "expires_at_0": "", "expires_at_1": ""})

    assert response.status_code == 302
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    shown = [KEY.search(m) for m in messages if "copy it now" in m]
    assert len(shown) == 1 and shown[0] is not None
    raw = shown[0].group(0)
    key = ApiKey.objects.get()
    assert (key.name, key.prefix, key.key_hash) == ("crm", raw[:12], hash_api_key(raw))
    # It should show it on the next page, once, and never again.
    assert raw in admin_browser.get(f"/admin/realtime/apikey/{key.pk}/change/").content.decode()
    assert raw not in admin_browser.get(f"/admin/realtime/apikey/{key.pk}/change/").content.decode()
    assert raw not in admin_browser.get("/admin/realtime/apikey/").content.decode()


@pytest.mark.django_db
def test_it_revokes_keys_from_the_admin(admin_browser, make_key, settings):
    settings.REALTIME_LOCAL_MODE = False
    key, raw = make_key("leaked")
    other, _ = make_key("fine")

    admin_browser.post("/admin/realtime/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]})

    key.refresh_from_db()
    other.refresh_from_db()
    assert key.revoked_at is not None and other.revoked_at is None
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/realtime/calls").status_code == 401


@pytest.mark.django_db
def test_it_never_deletes_keys_from_the_admin(admin_browser, make_key):
    key, _ = make_key()

    response = admin_browser.post(f"/admin/realtime/apikey/{key.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert ApiKey.objects.filter(pk=key.pk).exists()


# --- the services every path above goes through ---------------------------------------------


@pytest.mark.django_db
def test_it_stores_only_the_hash_and_prefix_of_a_new_key():
    key = ApiKey(name="direct")

    raw = services.api_key_create(key, by=services.SYSTEM)

    assert KEY.fullmatch(raw)
    stored = ApiKey.objects.get()
    assert (stored.pk, stored.name, stored.prefix, stored.key_hash) == (key.pk, "direct", raw[:12], hash_api_key(raw))
    assert raw not in str(ApiKey.objects.values().get())


@pytest.mark.django_db
def test_it_revokes_keys_once_keeping_the_first_time(make_key):
    (first, _), (second, _) = make_key("a"), make_key("b")
    assert services.api_key_revoke(ApiKey.objects.filter(pk=first.pk), by=services.SYSTEM) == 1
    first.refresh_from_db()
    revoked_at = first.revoked_at

    assert services.api_key_revoke(ApiKey.objects.all(), by=services.SYSTEM) == 1

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revoked_at == revoked_at and second.revoked_at is not None and second.revoked_at >= revoked_at
