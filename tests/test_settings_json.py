"""JSON settings (prices, model aliases, ICE servers): a bad value stops the start, naming the setting."""

from __future__ import annotations

import pytest

from .test_production_settings import _run


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REALTIME_PRICING", "{nope", "REALTIME_PRICING must be JSON ("),
        ("REALTIME_TRANSCRIPTION_PRICING", "[1]", "REALTIME_TRANSCRIPTION_PRICING must be a JSON object."),
        ("REALTIME_MODEL_ALIASES", '"gpt-realtime"', "REALTIME_MODEL_ALIASES must be a JSON object."),
        ("REALTIME_ICE_SERVERS", '{"urls": "stun:example.org"}', "REALTIME_ICE_SERVERS must be a JSON array."),
    ],
)
def test_it_names_a_json_setting_that_cannot_be_read(tmp_path, name, value, message):
    result = _run(tmp_path, "manage.py", "check", **{name: value})

    assert result.returncode != 0
    assert f"ImproperlyConfigured: {message}" in result.stderr


def test_it_adds_json_prices_to_the_catalogue_s(tmp_path):
    code = "from django.conf import settings; print(settings.REALTIME_PRICING['house-model'], settings.REALTIME_PRICING['gpt-realtime']['text_in'])"

    result = _run(tmp_path, "manage.py", "shell", "-c", code, REALTIME_PRICING='{"house-model": {"text_in": 1.5}}')

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "{'text_in': 1.5} 4.0"
