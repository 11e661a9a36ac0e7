"""Password guessing on the staff sign-in pages: django-axes locks a user and address out."""

from __future__ import annotations

import httpx
import pytest
from axes.models import AccessAttempt
from axes.utils import reset
from django.test import Client

LOGIN_PAGES = ["/accounts/login/", "/admin/login/"]


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("agent", "agent@example.test", "correct horse", is_staff=True)


def _sign_in(client: Client, page: str, password: str, address: str = "203.0.113.7"):
    return client.post(page, {"username": "agent", "password": password}, REMOTE_ADDR=address)


@pytest.mark.django_db
@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_it_locks_out_after_the_failure_limit_and_refuses_the_right_password_until_reset(client, staff, settings, page):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _sign_in(client, page, "wrong").status_code == 200  # the form again, with its error
    locked = _sign_in(client, page, "wrong")
    assert locked.status_code == 429
    assert b"Too many failed sign-in attempts" in locked.content

    # The right password is refused too, and nobody is signed in.
    refused = _sign_in(client, page, "correct horse")
    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session

    # Kept in the database every process reads, for this user and address only.
    attempt = AccessAttempt.objects.get()
    assert (attempt.username, attempt.ip_address) == ("agent", "203.0.113.7")
    assert attempt.failures_since_start >= settings.AXES_FAILURE_LIMIT
    assert _sign_in(Client(), page, "correct horse", address="198.51.100.9").status_code == 302

    reset(username="agent")
    assert _sign_in(Client(), page, "correct horse").status_code == 302


@pytest.mark.django_db
def test_it_says_so_in_french(client, staff, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = client.post("/accounts/login/", {"username": "agent", "password": "wrong"}, HTTP_ACCEPT_LANGUAGE="fr")
    assert response.status_code == 429
    assert "Trop de tentatives de connexion" in response.content.decode()


@pytest.mark.django_db
def test_it_lists_lockouts_in_the_admin(client, staff, django_user_model, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _sign_in(Client(), "/admin/login/", "wrong")
    admin = django_user_model.objects.create_superuser("boss", "boss@example.test", "x")
    client.force_login(admin)
    page = client.get("/admin/axes/accessattempt/")
    assert page.status_code == 200
    assert b"203.0.113.7" in page.content


@pytest.mark.django_db(transaction=True)
def test_it_locks_out_across_processes(asgi_server, staff, settings):
    """Failures made on the real server (another process) lock the pair out here too."""
    with httpx.Client(base_url=asgi_server.url, timeout=10) as browser:
        token = browser.get("/accounts/login/").cookies["csrftoken"]
        for _ in range(settings.AXES_FAILURE_LIMIT):
            browser.post("/accounts/login/", data={"username": "agent", "password": "wrong", "csrfmiddlewaretoken": token})

    assert _sign_in(Client(), "/accounts/login/", "correct horse", address="127.0.0.1").status_code == 429
