"""GET /realtime-api.html: the demo page, its configuration, CSRF cookie and translations."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.django_db


def _config(html: str) -> dict:
    match = re.search(r'<script id="realtime-config" type="application/json">(.*?)</script>', html, re.S)
    assert match, "the page should carry its configuration as json_script"
    return json.loads(match.group(1))


def test_it_serves_the_page_with_its_configuration(client, settings):
    settings.REALTIME_ICE_SERVERS = [{"urls": "stun:stun.example.invalid:3478"}]

    response = client.get("/realtime-api.html")

    assert response.status_code == 200
    html = response.content.decode()
    assert _config(html) == {
        "apiBase": "/api/realtime",
        "feedPath": "/ws/realtime/calls",
        "iceServers": [{"urls": "stun:stun.example.invalid:3478"}],
        "canEnd": True,
    }
    # It should set the CSRF cookie, so the page's POST/DELETE carry X-CSRFToken.
    assert response.cookies["csrftoken"].value
    assert 'id="call-form"' in html
    assert '<option value="gpt-realtime-2.1" selected>' in html
    assert '<option value="alloy" selected>' in html
    # Everything is served from here: no third-party host.
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_it_has_no_ice_servers_by_default(client):
    assert _config(client.get("/realtime-api.html").content.decode())["iceServers"] == []


def test_it_speaks_french_by_default(client, settings):
    settings.LANGUAGE_CODE = "fr"

    html = client.get("/realtime-api.html").content.decode()

    assert '<html lang="fr">' in html


def test_it_switches_to_english(client, settings):
    settings.LANGUAGE_CODE = "fr"

    response = client.post("/i18n/setlang/", {"language": "en", "next": "/realtime-api.html"})

    assert response.status_code == 302
    assert response["Location"] == "/realtime-api.html"
    assert '<html lang="en">' in client.get("/realtime-api.html").content.decode()


def test_it_serves_the_javascript_catalog_locally(client):
    response = client.get("/jsi18n/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert "globals.gettext = django.gettext" in response.content.decode()
