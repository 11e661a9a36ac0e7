"""Browser-facing headers: CSP, nosniff, Referrer-Policy, framing, HSTS and secure cookies in production."""

from __future__ import annotations

import re

import pytest
from django.test import Client

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws://testserver wss://testserver; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@pytest.mark.parametrize("path", ["/accounts/login/", "/api/realtime/stats", "/api/realtime/calls/call_unknown", "/admin/login/"])
@pytest.mark.django_db
def test_it_sends_the_security_headers_on_pages_and_api_answers(client, path):
    response = client.get(path)

    assert response["Content-Security-Policy"] == CSP
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    # The order of a permissions policy's features carries no meaning (the header is a dictionary).
    assert set(response["Permissions-Policy"].split(", ")) == {"microphone=(self)", "camera=()", "geolocation=()", "payment=()", "usb=()"}


@pytest.mark.django_db
def test_it_serves_a_login_page_the_policy_does_not_break(client):
    html = client.get("/accounts/login/").content.decode()

    # It should run nothing inline: every script and style comes from /static/.
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert "<style" not in html and " style=" not in html and " on" + "click=" not in html
    assert re.search(r'<link rel="stylesheet" href="/static/css/login\.css">', html)


@pytest.mark.django_db
def test_it_keeps_the_policy_on_answers_to_unknown_hosts():
    response = Client(raise_request_exception=False).get("/accounts/login/", HTTP_HOST="evil.example")

    assert response.status_code == 400
    assert "connect-src 'self' ; " not in response["Content-Security-Policy"]
    assert "connect-src 'self'; object-src" in response["Content-Security-Policy"]


@pytest.mark.django_db
def test_it_sets_hsts_and_secure_cookies_in_production(settings, django_user_model):
    # The values production mode defaults to (see iaposte/settings.py); a new Client loads them.
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    django_user_model.objects.create_user("agent", "agent@example.test", "correct horse", is_staff=True)
    browser = Client()

    page = browser.get("/accounts/login/", secure=True)
    signed_in = browser.post(
        "/accounts/login/",
        {"username": "agent", "password": "correct horse", "csrfmiddlewaretoken": page.cookies["csrftoken"].value},
        secure=True,
    )

    assert page["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert page.cookies["csrftoken"]["secure"] is True
    assert signed_in.status_code == 302
    session = signed_in.cookies["sessionid"]
    assert session["secure"] is True and session["httponly"] is True and session["samesite"] == "Lax"


@pytest.mark.django_db
def test_it_redirects_plain_http_to_https_in_production(settings):
    settings.SECURE_SSL_REDIRECT = True

    response = Client().get("/api/realtime/stats")

    assert response.status_code == 301
    assert response["Location"] == "https://testserver/api/realtime/stats"
