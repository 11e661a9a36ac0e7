"""One time zone (settings.TIME_ZONE, Europe/Paris unless set) for log lines and the admin; the
demo page shows the viewer's own (tests/browser/test_demo_page_fixes.py)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
import sys

import pytest

from realtime.logfilters import ZonedFormatter
from realtime.models import Call

from .conftest import ROOT

SHOW_ZONE_AND_LOG = (
    "import django, logging; django.setup(); from django.conf import settings; "
    "print(settings.TIME_ZONE, flush=True); logging.getLogger('realtime').info('time zone check')"
)


def _settings_process(**env: str) -> subprocess.CompletedProcess[str]:
    base = {name: value for name, value in os.environ.items() if name not in ("TIME_ZONE", "DJANGO_SETTINGS_MODULE")}
    return subprocess.run(
        [sys.executable, "-c", SHOW_ZONE_AND_LOG],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "iaposte.settings", "DEBUG": "true", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_defaults_to_paris_and_stamps_log_lines_there_with_their_offset():
    result = _settings_process()

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Europe/Paris\n"
    # Paris is UTC+01:00 or +02:00 depending on the day the test runs.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0[12]:00 INFO realtime time zone check\n", result.stderr), result.stderr


def test_it_takes_the_time_zone_from_the_environment():
    result = _settings_process(TIME_ZONE="Asia/Tokyo")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Asia/Tokyo\n"
    assert re.fullmatch(r"\S+\+09:00 INFO realtime time zone check\n", result.stderr), result.stderr


def test_it_refuses_an_unknown_time_zone():
    result = _settings_process(TIME_ZONE="Europe/Atlantis")

    assert result.returncode == 1
    assert "ImproperlyConfigured: TIME_ZONE must be a time zone name such as Europe/Paris or UTC, not 'Europe/Atlantis'." in result.stderr


@pytest.mark.parametrize(
    ("utc", "shown"),
    [
        # Both sides of the spring change in Paris: the offset follows the date, not the host.
        (dt.datetime(2026, 3, 29, 0, 59, 59, 250_000, tzinfo=dt.UTC), "2026-03-29T01:59:59.250+01:00"),
        (dt.datetime(2026, 3, 29, 1, 0, 0, 500_000, tzinfo=dt.UTC), "2026-03-29T03:00:00.500+02:00"),
    ],
)
def test_it_formats_a_log_time_in_the_zone_it_is_given(utc, shown):
    record = logging.LogRecord("realtime", logging.INFO, __file__, 1, "hello", None, None)
    record.created = utc.timestamp()

    assert ZonedFormatter("%(asctime)s %(message)s", time_zone="Europe/Paris").format(record) == f"{shown} hello"


@pytest.mark.django_db
@pytest.mark.parametrize(("zone", "shown"), [("Europe/Paris", "14:00"), ("America/New_York", "08:00")])
def test_it_shows_times_in_the_admin_in_that_zone(admin_client, make_call, settings, zone, shown):
    settings.TIME_ZONE = zone
    call = make_call()
    Call.objects.filter(pk=call.pk).update(created_at=dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC))

    html = admin_client.get("/admin/realtime/call/", HTTP_ACCEPT_LANGUAGE="fr").content.decode()

    # The list's short form, to the second (iaposte/formats).
    assert f"01/07/2026 {shown}:00" in html
    assert ("12:00:00" in html) is False
