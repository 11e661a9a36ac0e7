"""Property tests for the two validators that stand between the internet and OpenAI.

Whatever they are given, `sdp.validate_offer` and `sessions.parse_session` either accept it or raise
our validation errors (`InvalidInput`, `PayloadTooLarge`), which the API turns into a 400/413;
anything else would be a 500. Valid inputs round-trip.
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from realtime import sessions
from realtime.exceptions import InvalidInput, PayloadTooLarge
from realtime.sdp import validate_offer

fuzz = hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every character, lone surrogates included: JSON's "\ud800" escapes produce them.
any_char = st.characters(exclude_categories=())
any_text = st.text(any_char, max_size=200)
json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True, allow_infinity=True) | any_text
)
SESSION_KEYS = sorted(
    {
        *sessions.SessionInput.model_fields,
        "input",
        "output",
        "format",
        "voice",
        "type",
        "rate",
        "transcription",
        "turn_detection",
        "noise_reduction",
    }
    | {"id", "name", "model", "speed", "eagerness", "threshold", "server_label", "retention_ratio", "workflow_name", "effort"}
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(SESSION_KEYS) | any_text, children, max_size=5),
    max_leaves=25,
)


def _only_our_errors(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except (InvalidInput, PayloadTooLarge) as exc:
        assert exc.message  # a message a person can read
        return None


# --- SDP --------------------------------------------------------------------------------------

REAL_LINES = [
    "v=0",
    "o=- 4227147428 1719357865 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "c=IN IP4 0.0.0.0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:0123456789abcdef0123456789",
    "a=fingerprint:sha-256 AB:CD:EF",
    "a=mid:0",
    "a=rtpmap:111 opus/48000/2",
]
sdp_like = st.lists(st.sampled_from(REAL_LINES) | st.from_regex(r"[a-z]=[^\r\n]{0,40}", fullmatch=True) | any_text, max_size=20).flatmap(
    lambda lines: st.sampled_from(["\n", "\r\n", "\r", ""]).map(lambda sep: sep.join(lines))
)


@fuzz
@given(st.one_of(any_text, sdp_like, json_values, st.binary(max_size=100)))
def test_it_validates_any_offer_with_our_errors_only(raw):
    result = _only_our_errors(validate_offer, raw)

    if result is not None:
        assert result.startswith("v=0\r\n") and result.endswith("\r\n")


token = st.text(string.ascii_letters + string.digits + "+/", min_size=4, max_size=32)
# Surrounding blank space is trimmed from the offer, so generated lines do not end with it.
attribute = st.from_regex(r"a=[a-z][a-z0-9-]{0,15}(:[ -~]{0,39}[!-~])?", fullmatch=True)


@st.composite
def valid_offers(draw: st.DrawFn) -> tuple[str, list[str]]:
    lines = [
        "v=0",
        f"o=- {draw(st.integers(0, 2**62))} {draw(st.integers(0, 2**31))} IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        *draw(st.lists(attribute, max_size=5)),
        f"m=audio {draw(st.integers(1, 65535))} UDP/TLS/RTP/SAVPF 111",
        f"a=ice-ufrag:{draw(token)}",
        f"a=ice-pwd:{draw(token)}",
        "a=fingerprint:sha-256 " + ":".join(draw(st.lists(st.sampled_from(["AB", "01", "FF"]), min_size=32, max_size=32))),
        *draw(st.lists(attribute, max_size=10)),
    ]
    separator = draw(st.sampled_from(["\r\n", "\n"]))
    padding = draw(st.sampled_from(["", "\n", "  \r\n", "\n\n"]))
    return padding + separator.join(lines) + padding, lines


@fuzz
@given(valid_offers())
def test_it_accepts_valid_offers_and_round_trips_them(offer_and_lines):
    offer, lines = offer_and_lines

    normalised = validate_offer(offer)

    assert normalised == "\r\n".join(lines) + "\r\n"
    assert validate_offer(normalised) == normalised


def test_it_refuses_an_offer_over_the_size_cap():
    huge = "v=0\r\n" + "a=x-pad:" + "x" * settings.REALTIME_MAX_SDP_BYTES

    with pytest.raises(PayloadTooLarge):
        validate_offer(huge)


# --- session ----------------------------------------------------------------------------------


@fuzz
@given(json_values)
def test_it_parses_any_json_session_with_our_errors_only(raw):
    config = _only_our_errors(sessions.parse_session, raw)

    if config is not None:
        # It should accept only what can be stored and sent on: UTF-8 encodable JSON.
        json.dumps([config.requested, config.upstream, config.instructions], ensure_ascii=False).encode("utf-8")


@fuzz
@given(any_text)
def test_it_refuses_instructions_that_are_not_unicode_text(text):
    config = _only_our_errors(sessions.parse_session, {"instructions": text})

    assert (config is not None) == ("\x00" not in text and _is_utf8(text))


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@fuzz
@given(st.dictionaries(st.sampled_from(SESSION_KEYS), json_values, max_size=6))
def test_it_parses_any_object_with_known_keys_with_our_errors_only(raw):
    _only_our_errors(sessions.parse_session, raw)


safe_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=300)
models = st.sampled_from(sorted(sessions.GA_MODELS | set(settings.REALTIME_MODEL_ALIASES)))


@st.composite
def seed_sessions(draw: st.DrawFn) -> dict[str, Any]:
    optional = {
        "type": st.just("realtime"),
        "model": models,
        "modalities": st.sampled_from([["text"], ["audio"], ["text", "audio"], ["audio", "text"]]),
        "voice": st.sampled_from(sessions.VOICES),
        "instructions": safe_text,
        "temperature": st.floats(0.6, 1.2),
        "max_response_output_tokens": st.integers(1, sessions.MAX_TOKENS_LIMIT) | st.just("inf"),
        "input_audio_format": st.sampled_from(sorted(sessions.BETA_AUDIO_FORMATS)),
        "turn_detection": st.none() | st.just({"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 500}),
    }
    keys = draw(st.lists(st.sampled_from(sorted(optional)), unique=True))
    return {key: draw(optional[key]) for key in keys}


@st.composite
def ga_sessions(draw: st.DrawFn) -> dict[str, Any]:
    session: dict[str, Any] = {
        "type": "realtime",
        "model": draw(st.sampled_from(sorted(sessions.GA_MODELS))),
        "output_modalities": draw(st.sampled_from([["audio"], ["text"]])),
        "audio": {"output": {"voice": draw(st.sampled_from(sessions.VOICES))}},
    }
    if draw(st.booleans()):
        session["instructions"] = draw(safe_text)
    if draw(st.booleans()):
        session["max_output_tokens"] = draw(st.integers(1, sessions.MAX_TOKENS_LIMIT) | st.just("inf"))
    if draw(st.booleans()):
        session["audio"]["input"] = {"turn_detection": {"type": "semantic_vad", "eagerness": draw(st.sampled_from(["low", "auto"]))}}
    return session


@fuzz
@given(seed_sessions())
def test_it_accepts_seed_sessions_and_translates_them_to_a_valid_ga_session(raw):
    config = sessions.parse_session(raw)

    assert config.requested == raw
    assert config.model == raw.get("model", settings.REALTIME_DEFAULT_MODEL)
    assert config.voice == raw.get("voice", sessions.DEFAULT_VOICE)
    assert config.instructions == raw.get("instructions", "")
    assert config.temperature == raw.get("temperature")
    assert "temperature" not in config.upstream
    # It should send upstream a GA session that is itself valid and stable.
    again = sessions.parse_session(config.upstream)
    assert again.upstream == config.upstream
    assert config.upstream["model"] in sessions.GA_MODELS


@fuzz
@given(ga_sessions())
def test_it_sends_a_complete_ga_session_unchanged(raw):
    config = sessions.parse_session(raw)

    assert config.upstream == raw
    assert config.notes == []
