"""Logging filters (no Django imports: LOGGING is configured while settings load)."""

from __future__ import annotations

import datetime
import logging
from zoneinfo import ZoneInfo


class OneLineSecurityLog(logging.Filter):
    """Drops the traceback of `django.security.*` records (a bad Host header, suspicious input): the
    message names the problem, and anyone can cause one with a single request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


class ZonedFormatter(logging.Formatter):
    """Timestamps in the site's time zone (settings.TIME_ZONE, the admin's and the page's), with
    their UTC offset, so a line reads the same on any host: 2026-03-29T02:30:00.123+02:00."""

    def __init__(self, fmt: str | None = None, *, time_zone: str) -> None:
        super().__init__(fmt)
        self.zone = ZoneInfo(time_zone)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.datetime.fromtimestamp(record.created, tz=self.zone).isoformat(timespec="milliseconds")
