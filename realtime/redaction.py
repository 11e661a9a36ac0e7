"""Phone numbers and e-mail addresses taken out of transcripts before they are stored.

Optional (settings.REALTIME_REDACT_TRANSCRIPTS): `services.call_record_events` applies it to the
text of transcript events, so what a caller dictated (a number, an address) never reaches the
database. Numbers are found by Google's libphonenumber (`phonenumbers`), which knows national
formats ("06 12 34 56 78" with the FR region) and international ones ("+33 6 12 34 56 78").
"""

from __future__ import annotations

import re
from typing import Any

import phonenumbers

PHONE = "[phone]"
EMAIL = "[email]"
# Deliberately loose: a false positive costs a word of transcript, a miss leaks an address.
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# The keys of transcript events that hold what was said (items' content parts, transcriptions).
TEXT_KEYS = frozenset({"transcript", "text"})


def redact_text(text: str, *, region: str) -> str:
    text = _EMAIL.sub(EMAIL, text)
    spans = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE)]
    for start, end in reversed(spans):
        text = text[:start] + PHONE + text[end:]
    return text


def redact(value: Any, *, region: str) -> Any:
    """`value` (an event's data) with every transcript text redacted; other values untouched."""
    if isinstance(value, dict):
        return {
            k: redact_text(v, region=region) if k in TEXT_KEYS and isinstance(v, str) else redact(v, region=region)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, region=region) for v in value]
    return value
