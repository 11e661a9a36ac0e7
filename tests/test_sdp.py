"""SDP offer validation, before anything is sent upstream."""

from __future__ import annotations

import pytest

from realtime.exceptions import InvalidInput, PayloadTooLarge
from realtime.sdp import validate_offer


def test_it_normalises_line_endings_and_surrounding_blank_space(sdp_offer):
    pasted = "\n" + sdp_offer.replace("\r\n", "\n") + "\n\n"

    assert validate_offer(pasted) == sdp_offer


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s.replace("v=0", "v=1", 1),
        lambda s: s.replace("m=audio", "m=video"),
        lambda s: s + "this is not sdp\r\n",
        lambda s: s + "a=x\x07bell\r\n",
        lambda s: "\r\n".join(line for line in s.split("\r\n") if not line.startswith("o=")),
    ],
)
def test_it_refuses_malformed_offers(sdp_offer, mangle):
    with pytest.raises(InvalidInput) as raised:
        validate_offer(mangle(sdp_offer))

    assert raised.value.code == "invalid_sdp"


def test_it_refuses_an_offer_over_the_size_cap(settings, sdp_offer):
    settings.REALTIME_MAX_SDP_BYTES = len(sdp_offer) - 1

    with pytest.raises(PayloadTooLarge):
        validate_offer(sdp_offer)
