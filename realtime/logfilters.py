"""Logging filters (no Django imports: LOGGING is configured while settings load)."""

from __future__ import annotations

import logging


class OneLineSecurityLog(logging.Filter):
    """Drops the traceback of `django.security.*` records (a bad Host header, suspicious input): the
    message names the problem, and anyone can cause one with a single request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True
