"""Session translation: the seed's beta shape and the GA shape both become a GA session."""

from __future__ import annotations

import pytest
from django.utils import translation

from realtime.exceptions import InvalidInput
from realtime.sessions import VOICES, parse_session, session_json_schema

# Pure validation and translation: no upstream, no database.


def test_it_translates_the_seeds_complete_example():
    config = parse_session(
        {
            "model": "gpt-4o-realtime-preview",
            "modalities": ["text", "audio"],
            "voice": "shimmer",
            "instructions": "Tu es un assistant vocal expert en français.",
            "temperature": 0.9,
            "max_response_output_tokens": 4096,
        }
    )

    assert config.upstream == {
        "type": "realtime",
        "model": "gpt-realtime-2.1",
        "output_modalities": ["audio"],
        "audio": {"output": {"voice": "shimmer"}},
        "max_output_tokens": 4096,
        "instructions": "Tu es un assistant vocal expert en français.",
    }
    assert (config.model, config.voice, config.temperature, config.max_output_tokens) == ("gpt-4o-realtime-preview", "shimmer", 0.9, 4096)
    assert [n["field"] for n in config.notes] == ["model", "temperature", "modalities"]


def test_it_uses_the_seeds_defaults_when_nothing_is_given():
    config = parse_session(None)

    assert (config.model, config.voice, config.modalities) == ("gpt-realtime-2.1", "alloy", ["text", "audio"])
    assert config.upstream == {
        "type": "realtime",
        "model": "gpt-realtime-2.1",
        "output_modalities": ["audio"],
        "audio": {"output": {"voice": "alloy"}},
    }


def test_it_translates_beta_audio_settings_into_the_ga_audio_object():
    config = parse_session(
        {
            "modalities": ["text"],
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
        }
    )

    assert config.upstream["output_modalities"] == ["text"]
    assert config.upstream["audio"] == {
        "input": {
            "format": {"type": "audio/pcmu"},
            "transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
        },
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
    }


def test_it_uses_configured_model_aliases(settings):
    settings.REALTIME_MODEL_ALIASES = {"house-model": "gpt-realtime-mini"}

    config = parse_session({"model": "house-model"})

    assert (config.model, config.upstream_model) == ("house-model", "gpt-realtime-mini")


def test_it_keeps_a_custom_voice_id():
    config = parse_session({"type": "realtime", "audio": {"output": {"voice": {"id": "voice_1234"}}}})

    assert config.voice == "voice_1234"
    assert config.upstream["audio"]["output"]["voice"] == {"id": "voice_1234"}


def test_it_passes_ga_tools_through():
    tools = [{"type": "function", "name": "lookup", "description": "Find a parcel", "parameters": {"type": "object"}}]

    config = parse_session({"type": "realtime", "tools": tools, "tool_choice": "auto"})

    assert config.upstream["tools"] == tools and config.upstream["tool_choice"] == "auto"


@pytest.mark.parametrize(
    ("session", "field"),
    [
        ({"tools": [{"type": "function"}]}, "session.tools[0].name"),
        ({"tools": [{"type": "webhook"}]}, "session.tools[0].type"),
        ({"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}}}, "session.audio.input.turn_detection.threshold"),
        ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "session.audio.input.format.rate"),
        ({"max_output_tokens": True}, "session.max_output_tokens"),
        ({"instructions": "a\x00b"}, "session.instructions"),
        ({"modalities": ["audio", "audio"]}, "session.modalities"),
    ],
)
def test_it_names_the_field_at_fault(session, field):
    with pytest.raises(InvalidInput) as raised:
        parse_session(session)

    assert raised.value.details["field"] == field


@pytest.mark.parametrize(
    ("session", "field", "message"),
    [
        ({"instructions": None}, "session.instructions", "must be a string."),
        ({"tools": [{}]}, "session.tools[0].type", "is required."),
        ({"tools": [{"type": "webhook"}]}, "session.tools[0].type", "'webhook' is not one of: function, mcp."),
        ({"audio": {"output": {"voice": {"id": 5}}}}, "session.audio.output.voice.id", "must be a string."),
        ({"tool_choice": {"type": "function"}}, "session.tool_choice.name", "is required."),
        ({"max_output_tokens": "lots"}, "session.max_output_tokens", "must be an integer."),
        ({"temperature": float("nan")}, "session.temperature", "must be a number."),
        ({"instructions": "\ud800"}, "session.instructions", "must be valid Unicode text."),
    ],
)
def test_it_says_what_is_wrong_with_the_field(session, field, message):
    with pytest.raises(InvalidInput) as raised:
        parse_session(session)

    assert raised.value.details == {"field": field}
    assert raised.value.message == f"{field}: {message}"


def test_it_keeps_null_for_the_fields_that_turn_a_feature_off():
    config = parse_session({"type": "realtime", "tracing": None, "audio": {"input": {"turn_detection": None, "transcription": None}}})

    assert config.upstream["tracing"] is None
    assert config.upstream["audio"]["input"] == {"turn_detection": None, "transcription": None}


def test_it_answers_in_french():
    with translation.override("fr"), pytest.raises(InvalidInput) as raised:
        parse_session({"temperature": 3})

    assert raised.value.message == "session.temperature: doit être compris entre 0.6 et 1.2."


def test_it_describes_what_it_accepts_as_a_json_schema():
    schema = session_json_schema()

    assert schema["additionalProperties"] is False
    assert schema["properties"]["voice"]["enum"] == list(VOICES)
    assert (schema["properties"]["temperature"]["minimum"], schema["properties"]["temperature"]["maximum"]) == (0.6, 1.2)
    tools = schema["properties"]["tools"]
    assert tools["maxItems"] == 128
    assert tools["items"]["discriminator"]["propertyName"] == "type"
    assert set(tools["items"]["discriminator"]["mapping"]) == {"function", "mcp"}
