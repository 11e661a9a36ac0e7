"""SDP offer validation, done before anything is sent upstream.

We check what OpenAI needs to answer an offer (RFC 8866 structure, an audio section, ICE
credentials and a DTLS fingerprint) so that a bad offer is a clear 400 here, not a 502 later.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.utils.translation import gettext as _

from .exceptions import InvalidInput, PayloadTooLarge

# "<type>=<value>": a single lowercase letter, then printable text (RFC 8866 section 5).
_LINE = re.compile(r"^[a-z]=[^\x00-\x08\x0a-\x1f\x7f]*$")


def _invalid(message: str) -> InvalidInput:
    return InvalidInput("sdp", message, code="invalid_sdp")


def validate_offer(raw: object) -> str:
    """Return the offer normalised to CRLF line endings, or raise InvalidInput/PayloadTooLarge."""
    if not isinstance(raw, str):
        raise _invalid(_("must be a string containing an SDP offer."))
    try:
        size = len(raw.encode("utf-8"))
    except UnicodeEncodeError:
        # A lone surrogate (JSON allows "\ud800"): not text we can store or send on.
        raise _invalid(_("must be valid Unicode text.")) from None
    if size > settings.REALTIME_MAX_SDP_BYTES:
        raise PayloadTooLarge(
            _("sdp: the offer exceeds %(n)d bytes.") % {"n": settings.REALTIME_MAX_SDP_BYTES},
            details={"field": "sdp", "max_bytes": settings.REALTIME_MAX_SDP_BYTES},
        )
    # Integrators paste offers from heredocs: tolerate surrounding blank space and bare LF.
    lines = raw.strip().replace("\r\n", "\n").split("\n")
    if not lines or lines[0] != "v=0":
        raise _invalid(_("an SDP offer must start with 'v=0'."))
    for number, line in enumerate(lines, start=1):
        if not _LINE.match(line):
            raise InvalidInput("sdp", _("line %(n)d is not a valid SDP line.") % {"n": number}, code="invalid_sdp")
    media = [line for line in lines if line.startswith("m=")]
    if not any(line.startswith("m=audio ") for line in media):
        raise _invalid(_("the offer has no audio section (m=audio)."))
    if any(" RTP/AVP " in f"{line} " for line in media) and not any(line.startswith("a=ice-ufrag:") for line in lines):
        # A SIP gateway's offer (plain RTP, no ICE or DTLS): OpenAI's WebRTC endpoint refuses it too.
        raise InvalidInput(
            "sdp",
            _(
                "this endpoint takes WebRTC offers (ICE and DTLS); this is a plain RTP offer, as a SIP gateway makes. "
                "Phone calls reach OpenAI through its SIP trunk and arrive here as webhooks: see docs/sip.md."
            ),
            code="sip_offer_not_supported",
        )
    for attribute, label in (("a=ice-ufrag:", "ICE ufrag"), ("a=ice-pwd:", "ICE password"), ("a=fingerprint:", "DTLS fingerprint")):
        if not any(line.startswith(attribute) and len(line) > len(attribute) for line in lines):
            raise _invalid(_("the offer has no %(what)s (%(attr)s).") % {"what": label, "attr": attribute.rstrip(":")})
    if not any(line.startswith("o=") for line in lines) or not any(line.startswith("s=") for line in lines):
        raise _invalid(_("the offer needs an origin (o=) and a session name (s=)."))
    return "\r\n".join(lines) + "\r\n"
