"""Session configuration: accept the seed's (retired beta) shape and OpenAI's GA shape, validate
every field, and translate to the GA session that is sent upstream.

The beta names map as: `modalities` -> `output_modalities` (GA allows exactly one of ["audio"] and
["text"]; audio output always carries its transcript), `voice` -> `audio.output.voice`,
`max_response_output_tokens` -> `max_output_tokens`, `input_audio_format`/`output_audio_format`/
`input_audio_transcription`/`turn_detection` -> `audio.input|output.*`. `temperature` no longer
exists upstream: it is validated, kept on the call and noted, never sent. Seed model names are
mapped through `settings.REALTIME_MODEL_ALIASES`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _

from .exceptions import InvalidInput

GA_MODELS = frozenset(
    {
        "gpt-realtime",
        "gpt-realtime-2025-08-28",
        "gpt-realtime-1.5",
        "gpt-realtime-2",
        "gpt-realtime-2.1",
        "gpt-realtime-2.1-mini",
        "gpt-realtime-mini",
        "gpt-realtime-mini-2025-10-06",
        "gpt-realtime-mini-2025-12-15",
        "gpt-audio-1.5",
        "gpt-audio-mini",
        "gpt-audio-mini-2025-10-06",
        "gpt-audio-mini-2025-12-15",
    }
)
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
DEFAULT_VOICE = "alloy"
TRANSCRIPTION_MODELS = (
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-4o-transcribe-diarize",
    "gpt-transcribe",
    "gpt-live-transcribe",
    "gpt-realtime-whisper",
)
# Beta audio format names and the GA objects they became.
BETA_AUDIO_FORMATS = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
MAX_TOKENS_LIMIT = 4096

Validator = Callable[[Any, str], Any]


@dataclass(frozen=True)
class SessionConfig:
    requested: dict[str, Any]
    model: str
    upstream_model: str
    voice: str
    modalities: list[str]
    instructions: str
    temperature: float | None
    max_output_tokens: int | None
    upstream: dict[str, Any]
    notes: list[dict[str, Any]] = field(default_factory=list)
    # Ours, not OpenAI's: the call's own time limit (None: settings.REALTIME_MAX_DURATION_SECONDS).
    max_duration_seconds: int | None = None


# --- small validators: each takes (value, path) and returns the value to keep -------------------


def _fail(path: str, message: str) -> InvalidInput:
    return InvalidInput(f"session.{path}" if path else "session", message)


def _string(*, max_length: int = 1000, choices: tuple[str, ...] | frozenset[str] | None = None) -> Validator:
    def check(value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise _fail(path, _("must be a string."))
        if choices is not None and value not in choices:
            raise _fail(path, _("'%(value)s' is not one of: %(choices)s.") % {"value": value[:100], "choices": ", ".join(sorted(choices))})
        if len(value) > max_length:
            raise _fail(path, _("must be at most %(n)d characters.") % {"n": max_length})
        if "\x00" in value:
            raise _fail(path, _("must not contain NUL characters."))
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                # A lone surrogate (JSON allows "\ud800"): the database and OpenAI would refuse it later.
                raise _fail(path, _("must be valid Unicode text.")) from None
        return value

    return check


def _number(low: float, high: float, *, integer: bool = False) -> Validator:
    def check(value: Any, path: str) -> float | int:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or (isinstance(value, float) and not math.isfinite(value)):
            raise _fail(path, _("must be an integer.") if integer else _("must be a number."))
        if not low <= value <= high:
            raise _fail(path, _("must be between %(low)s and %(high)s.") % {"low": low, "high": high})
        return value

    return check


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, _("must be true or false."))
    return value


def _nullable(inner: Validator) -> Validator:
    return lambda value, path: None if value is None else inner(value, path)


def _object(fields: dict[str, Validator], *, required: tuple[str, ...] = ()) -> Validator:
    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _fail(path, _("must be an object."))
        prefix = f"{path}." if path else ""
        for key in value:
            if key not in fields:
                raise _fail(f"{prefix}{key}", _("unknown parameter."))
        for key in required:
            if key not in value:
                raise _fail(f"{prefix}{key}", _("is required."))
        return {key: fields[key](item, f"{prefix}{key}") for key, item in value.items()}

    return check


def _one_of(kind_field: str, variants: dict[str, Validator]) -> Validator:
    """An object whose `type` (or other discriminator) picks the schema of the rest."""

    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _fail(path, _("must be an object."))
        kind = value.get(kind_field)
        # isinstance first: a list or object as discriminator is unhashable and cannot be looked up.
        if not isinstance(kind, str) or kind not in variants:
            raise _fail(
                f"{path}.{kind_field}",
                _("'%(value)s' is not one of: %(choices)s.") % {"value": str(kind)[:100], "choices": ", ".join(variants)},
            )
        return variants[kind](value, path)

    return check


def _list(inner: Validator, *, max_items: int) -> Validator:
    def check(value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise _fail(path, _("must be a list."))
        if len(value) > max_items:
            raise _fail(path, _("must have at most %(n)d items.") % {"n": max_items})
        return [inner(item, f"{path}[{i}]") for i, item in enumerate(value)]

    return check


def _json_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, _("must be an object."))
    return value


def _either(*validators: Validator) -> Validator:
    """The first validator that accepts the value wins; the last one's error is reported."""

    def check(value: Any, path: str) -> Any:
        for validator in validators[:-1]:
            try:
                return validator(value, path)
            except InvalidInput:
                continue
        return validators[-1](value, path)

    return check


def _max_tokens(value: Any, path: str) -> int | str:
    if value == "inf":
        return value
    return _number(1, MAX_TOKENS_LIMIT, integer=True)(value, path)


def _modalities_beta(value: Any, path: str) -> list[str]:
    items = _list(_string(choices=("text", "audio")), max_items=2)(value, path)
    if not items or len(set(items)) != len(items):
        raise _fail(path, _("must list 'text' and/or 'audio', once each."))
    return items


def _modalities_ga(value: Any, path: str) -> list[str]:
    if value not in (["audio"], ["text"]):
        raise _fail(path, _('must be ["audio"] or ["text"] (audio output includes its transcript).'))
    return value


_name = _string(max_length=64)
_text = _string(max_length=20_000)
_format = _one_of(
    "type",
    {
        "audio/pcm": _object({"type": _name, "rate": _number(24000, 24000, integer=True)}),
        "audio/pcmu": _object({"type": _name}),
        "audio/pcma": _object({"type": _name}),
    },
)
_transcription = _object(
    {
        "model": _string(choices=TRANSCRIPTION_MODELS),
        "language": _string(max_length=16),
        "languages": _list(_string(max_length=16), max_items=20),
        "prompt": _text,
        "keywords": _list(_name, max_items=100),
        "delay": _string(max_length=16),
    }
)
_vad_common = {"type": _name, "create_response": _boolean, "interrupt_response": _boolean}
_turn_detection = _one_of(
    "type",
    {
        "server_vad": _object(
            {
                **_vad_common,
                "threshold": _number(0, 1),
                "prefix_padding_ms": _number(0, 10_000, integer=True),
                "silence_duration_ms": _number(0, 10_000, integer=True),
                "idle_timeout_ms": _nullable(_number(5000, 30000, integer=True)),
            }
        ),
        "semantic_vad": _object({**_vad_common, "eagerness": _string(choices=("low", "medium", "high", "auto"))}),
    },
)
_voice = _either(_string(choices=VOICES), _object({"id": _string(max_length=200)}, required=("id",)))
_audio = _object(
    {
        "input": _object(
            {
                "format": _format,
                "transcription": _nullable(_transcription),
                "noise_reduction": _nullable(_object({"type": _string(choices=("near_field", "far_field"))})),
                "turn_detection": _nullable(_turn_detection),
            }
        ),
        "output": _object({"format": _format, "voice": _voice, "speed": _number(0.25, 1.5)}),
    }
)
_tool = _one_of(
    "type",
    {
        "function": _object({"type": _name, "name": _name, "description": _text, "parameters": _json_object}, required=("name",)),
        "mcp": _object(
            {
                "type": _name,
                "server_label": _name,
                "server_url": _string(max_length=2000),
                "connector_id": _name,
                "authorization": _string(max_length=4000),
                "headers": _json_object,
                "allowed_tools": _either(_list(_name, max_items=100), _json_object),
                "require_approval": _either(_string(choices=("always", "never")), _json_object),
                "server_description": _text,
            },
            required=("server_label",),
        ),
    },
)
_tool_choice = _either(
    _string(choices=("auto", "none", "required")),
    _one_of(
        "type",
        {
            "function": _object({"type": _name, "name": _name}, required=("name",)),
            "mcp": _object({"type": _name, "server_label": _name, "name": _name}, required=("server_label",)),
        },
    ),
)
_tracing = _nullable(
    _either(
        _string(choices=("auto",)),
        _object({"workflow_name": _name, "group_id": _name, "metadata": _json_object}),
    )
)
_truncation = _either(
    _string(choices=("auto", "disabled")),
    _object(
        {
            "type": _string(choices=("retention_ratio",)),
            "retention_ratio": _number(0, 1),
            "token_limits": _object({"post_instructions": _number(0, 1_000_000, integer=True)}),
        },
        required=("type", "retention_ratio"),
    ),
)


def _model(value: Any, path: str) -> str:
    allowed = GA_MODELS | frozenset(settings.REALTIME_MODEL_ALIASES)
    return _string(max_length=100, choices=allowed)(value, path)


def _instructions(value: Any, path: str) -> str:
    return _string(max_length=settings.REALTIME_MAX_INSTRUCTIONS_CHARS)(value, path)


def _max_duration(value: Any, path: str) -> int:
    # Bounded by the setting at validation time, so a lowered setting applies to new calls at once.
    return int(_number(1, settings.REALTIME_MAX_DURATION_SECONDS, integer=True)(value, path))


_FIELDS: dict[str, Validator] = {
    # Ours (never sent upstream): the call's maximum duration, at most the configured one.
    "max_duration_seconds": _max_duration,
    # Shared by both shapes.
    "type": _string(choices=("realtime",)),
    "model": _model,
    "instructions": _instructions,
    "tools": _list(_tool, max_items=128),
    "tool_choice": _tool_choice,
    # GA shape.
    "output_modalities": _modalities_ga,
    "audio": _audio,
    "max_output_tokens": _max_tokens,
    "tracing": _tracing,
    "truncation": _truncation,
    "include": _list(_string(choices=("item.input_audio_transcription.logprobs",)), max_items=1),
    "prompt": _object({"id": _name, "version": _name, "variables": _json_object}, required=("id",)),
    "reasoning": _object({"effort": _string(choices=("minimal", "low", "medium", "high", "xhigh"))}),
    "parallel_tool_calls": _boolean,
    # Seed (beta) shape.
    "modalities": _modalities_beta,
    "voice": _string(choices=VOICES),
    "temperature": _number(0.6, 1.2),
    "max_response_output_tokens": _max_tokens,
    "input_audio_format": _string(choices=tuple(BETA_AUDIO_FORMATS)),
    "output_audio_format": _string(choices=tuple(BETA_AUDIO_FORMATS)),
    "input_audio_transcription": _nullable(_transcription),
    "turn_detection": _nullable(_turn_detection),
}
# Beta name -> the GA path it fills; giving both is ambiguous and refused.
_BETA_TO_GA = {
    "modalities": "output_modalities",
    "voice": "audio.output.voice",
    "max_response_output_tokens": "max_output_tokens",
    "input_audio_format": "audio.input.format",
    "output_audio_format": "audio.output.format",
    "input_audio_transcription": "audio.input.transcription",
    "turn_detection": "audio.input.turn_detection",
}
# GA keys copied to the upstream session unchanged once validated.
_PASS_THROUGH = ("instructions", "tools", "tool_choice", "tracing", "truncation", "include", "prompt", "reasoning", "parallel_tool_calls")


def _has_path(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


def parse_session(raw: Any) -> SessionConfig:
    """Validate a session in either shape and build the GA session for upstream.

    Raises `InvalidInput` naming the first field at fault; never touches the network or the DB.
    """
    if raw is None:
        raw = {}
    session = _object(_FIELDS)(raw, "")
    for beta, ga in _BETA_TO_GA.items():
        if beta in session and _has_path(session, ga):
            raise _fail(beta, _("cannot be combined with '%(ga)s'; use one or the other.") % {"ga": ga})

    model = session.get("model", settings.REALTIME_DEFAULT_MODEL)
    upstream_model = settings.REALTIME_MODEL_ALIASES.get(model, model)
    if "modalities" in session:
        modalities = session["modalities"]
        output_modalities = ["audio"] if "audio" in modalities else ["text"]
    else:
        # Neither given: the seed's documented default, which GA serves as audio with transcript.
        output_modalities = session.get("output_modalities", ["audio"])
        modalities = session.get("output_modalities", ["text", "audio"])

    upstream: dict[str, Any] = {"type": "realtime", "model": upstream_model, "output_modalities": output_modalities}
    audio = copy.deepcopy(session.get("audio", {}))
    for beta, ga in _BETA_TO_GA.items():
        if beta in session and ga.startswith("audio."):
            value = session[beta]
            _set_path(audio, ga.removeprefix("audio."), BETA_AUDIO_FORMATS.get(value, value) if beta.endswith("_format") else value)
    audio.setdefault("output", {}).setdefault("voice", DEFAULT_VOICE)
    upstream["audio"] = audio
    voice_value = audio["output"]["voice"]
    voice = voice_value if isinstance(voice_value, str) else voice_value["id"]

    max_tokens = session.get("max_output_tokens", session.get("max_response_output_tokens"))
    if max_tokens is not None:
        upstream["max_output_tokens"] = max_tokens
    for key in _PASS_THROUGH:
        if key in session:
            upstream[key] = session[key]

    notes: list[dict[str, Any]] = []
    if model != upstream_model:
        notes.append({"field": "model", "requested": model, "sent": upstream_model, "reason": "model_alias"})
    if "temperature" in session:
        notes.append({"field": "temperature", "requested": session["temperature"], "sent": None, "reason": "not_supported_upstream"})
    if "max_duration_seconds" in session:
        notes.append(
            {"field": "max_duration_seconds", "requested": session["max_duration_seconds"], "sent": None, "reason": "enforced_by_broker"}
        )
    if "modalities" in session and modalities != output_modalities:
        notes.append({"field": "modalities", "requested": modalities, "sent": output_modalities, "reason": "ga_single_modality"})

    return SessionConfig(
        requested=raw,
        model=model,
        upstream_model=upstream_model,
        voice=voice,
        modalities=list(modalities),
        instructions=session.get("instructions", ""),
        temperature=session.get("temperature"),
        max_output_tokens=max_tokens if isinstance(max_tokens, int) else None,
        upstream=upstream,
        notes=notes,
        max_duration_seconds=session.get("max_duration_seconds"),
    )
