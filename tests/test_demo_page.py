"""GET /realtime-api.html: the demo page, its configuration, CSRF cookie and translations."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import time_machine

from realtime import catalogue, sessions
from tests.conftest import ROOT

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
        "transcriptionModel": "gpt-realtime-whisper",
    }
    # It should set the CSRF cookie, so the page's POST/DELETE carry X-CSRFToken.
    assert response.cookies["csrftoken"].value
    assert 'id="call-form"' in html
    assert '<option value="gpt-realtime-2.1" selected data-served="gpt-realtime-2.1">gpt-realtime-2.1 (default)</option>' in html
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


def test_it_selects_the_model_the_server_uses_and_names_what_each_is_sent_as(client, settings):
    # A default naming a retired (seed) model: the server sends its GA replacement.
    settings.REALTIME_DEFAULT_MODEL = "gpt-4o-realtime-preview"

    html = client.get("/realtime-api.html").content.decode()

    selected = re.findall(r'<option value="([^"]+)" selected data-served="([^"]+)">([^<]*)</option>', html)
    assert selected == [("gpt-4o-realtime-preview", "gpt-realtime-2.1", "gpt-4o-realtime-preview → gpt-realtime-2.1 (default)")]
    assert '<option value="gpt-4o-mini-realtime-preview" data-served="gpt-realtime-2.1-mini">' in html
    # Once OpenAI shuts models down (the catalogue's date), a shut-down model is shown with its
    # successor, and one without a successor is not offered: the server would refuse it.
    settings.REALTIME_DEFAULT_MODEL = "gpt-realtime"
    with time_machine.travel(dt.datetime(2027, 1, 20, 12, tzinfo=dt.UTC)):
        html = client.get("/realtime-api.html").content.decode()
    assert '<option value="gpt-realtime" selected data-served="gpt-realtime-2.1">gpt-realtime → gpt-realtime-2.1 (default)</option>' in html
    assert 'value="gpt-audio-mini"' not in html


def test_it_links_its_favicon_served_from_here(client):
    html = client.get("/realtime-api.html").content.decode()

    match = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', html)
    assert match and match.group(1) == "/static/favicon.svg"
    assert (ROOT / "static" / "favicon.svg").read_text().startswith("<svg")


def test_it_has_every_string_of_its_script_in_french(client):
    """Every gettext/pgettext literal of the page's script is in the French catalogue /jsi18n/ serves."""
    script = (ROOT / "static" / "realtime" / "realtime-api.js").read_text(encoding="utf-8")
    strings = re.findall(r'\bpgettext\("([^"]+)", "([^"]+)"\)|\bgettext\("([^"]+)"\)', script)

    served = client.get("/jsi18n/", HTTP_ACCEPT_LANGUAGE="fr").content.decode()

    catalog = json.loads(re.search(r"const newcatalog = (\{.*?\});\n", served, re.S).group(1))
    assert len(strings) > 40
    missing = [text or message for context, message, text in strings if not catalog.get(text or f"{context}\x04{message}")]
    assert missing == []


def test_it_has_every_string_of_its_template_in_french():
    from django.utils.translation import trans_real

    template = (ROOT / "templates" / "realtime-api.html").read_text(encoding="utf-8")
    strings = re.findall(r"""\{% translate ["']([^"']+)["'](?: context "([^"]+)")? %\}""", template)
    catalog = trans_real.translation("fr")._catalog  # type: ignore[attr-defined]

    assert len(strings) > 40
    assert [text for text, context in strings if (f"{context}\x04{text}" if context else text) not in catalog] == []


def test_it_asks_for_the_callers_words_with_a_current_transcription_model_the_session_accepts(client):
    html = client.get("/realtime-api.html").content.decode()
    model = _config(html)["transcriptionModel"]

    # On by default, named next to its box.
    assert re.search(r'<input type="checkbox" name="transcribe" id="f-transcribe" checked>', html)
    assert f"({model})" in html
    # A model OpenAI has announced no shutdown for, from the catalogue...
    assert model in catalogue.TRANSCRIPTION_MODELS
    assert model not in catalogue.SHUTDOWNS
    # ... that the page's (seed-shaped) session gets through validation, sent as GA.
    config = sessions.parse_session({"modalities": ["audio"], "voice": "alloy", "input_audio_transcription": {"model": model}})
    assert config.upstream["audio"]["input"]["transcription"] == {"model": model}
