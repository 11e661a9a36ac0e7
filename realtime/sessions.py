"""Session configuration: accept the seed's (retired beta) shape and OpenAI's GA shape, validate
every field, and translate to the GA session that is sent upstream.

The beta names map as: `modalities` -> `output_modalities` (GA allows exactly one of ["audio"] and
["text"]; audio output always carries its transcript), `voice` -> `audio.output.voice`,
`max_response_output_tokens` -> `max_output_tokens`, `input_audio_format`/`output_audio_format`/
`input_audio_transcription`/`turn_detection` -> `audio.input|output.*`. `temperature` no longer
exists upstream: it is validated, kept on the call and noted, never sent. Seed model names are
mapped through `settings.REALTIME_MODEL_ALIASES`. A model (realtime or transcription) past the
shutdown date in the catalogue is sent as its successor (`settings.REALTIME_MODEL_SUCCESSORS`) and
noted, or refused when it has none; before that date it is sent as asked, with a warning.

Validation is pydantic's (`SessionInput`: strict types, unknown keys refused, bounds, unions
picked by their `type` or by the value's kind); its first error becomes our `InvalidInput`, naming
the field (`session.audio.input.format.rate`) with a message in the request's language. The
translation to GA is a plain function over the validated input.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _
from pydantic import (
    MISSING,
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Tag,
    ValidationError,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from .catalogue import DEFAULT_VOICE, GA_MODELS, SHUTDOWNS, TRANSCRIPTION_MODELS, VOICES
from .exceptions import InvalidInput

__all__ = ["DEFAULT_VOICE", "GA_MODELS", "VOICES", "SessionConfig", "SessionInput", "parse_session", "session_json_schema"]

# Beta audio format names and the GA objects they became.
BETA_AUDIO_FORMATS = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
MAX_TOKENS_LIMIT = 4096


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
    # Models named that OpenAI will shut down: told to the caller in the answer and in call.created.
    warnings: list[dict[str, Any]] = field(default_factory=list)
    # Ours, not OpenAI's: the call's own time limit (None: settings.REALTIME_MAX_DURATION_SECONDS).
    max_duration_seconds: int | None = None


# --- field types ----------------------------------------------------------------------------


def _refuse(message: str) -> PydanticCustomError:
    """A validation error whose message (already translated) is ours."""
    return PydanticCustomError("realtime", "{message}", {"message": message})


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise _refuse(_("must not contain NUL characters."))
    return value


@dataclass(frozen=True)
class OneOf:
    """A string among `choices` (an `enum` in the JSON Schema); a message listing them otherwise."""

    choices: tuple[str, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {**handler(schema), "enum": list(self.choices)}

    def _check(self, value: str) -> str:
        if value not in self.choices:
            raise _refuse(_not_one_of(value, self.choices))
        return value


@dataclass(frozen=True)
class Between:
    """A number from `low` to `high` inclusive (`minimum`/`maximum` in the JSON Schema)."""

    low: float
    high: float

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {**handler(schema), "minimum": self.low, "maximum": self.high}

    def _check(self, value: float) -> float:
        if not self.low <= value <= self.high:
            raise _refuse(_("must be between %(low)s and %(high)s.") % {"low": self.low, "high": self.high})
        return value


def _not_one_of(value: Any, choices: Any) -> str:
    return _("'%(value)s' is not one of: %(choices)s.") % {"value": str(value)[:100], "choices": ", ".join(sorted(choices))}


def _model(value: str) -> str:
    # Read at validation time: aliases are a setting.
    allowed = GA_MODELS | frozenset(settings.REALTIME_MODEL_ALIASES)
    if value not in allowed:
        raise _refuse(_not_one_of(value, allowed))
    return value


def _instructions(value: str) -> str:
    if len(value) > settings.REALTIME_MAX_INSTRUCTIONS_CHARS:
        raise _refuse(_("must be at most %(n)d characters.") % {"n": settings.REALTIME_MAX_INSTRUCTIONS_CHARS})
    return value


def _max_duration(value: int) -> int:
    # Bounded by the setting at validation time, so a lowered setting applies to new calls at once.
    if not 1 <= value <= settings.REALTIME_MAX_DURATION_SECONDS:
        raise _refuse(_("must be between %(low)s and %(high)s.") % {"low": 1, "high": settings.REALTIME_MAX_DURATION_SECONDS})
    return value


def _modalities_beta(value: list[str]) -> list[str]:
    if not value or len(set(value)) != len(value):
        raise _refuse(_("must list 'text' and/or 'audio', once each."))
    return value


def _modalities_ga(value: list[str]) -> list[str]:
    if value not in (["audio"], ["text"]):
        raise _refuse(_('must be ["audio"] or ["text"] (audio output includes its transcript).'))
    return value


def _string_or_object(value: Any) -> str:
    """Picks the branch of a "string or object" union by the value's kind (anything else: object)."""
    return "string" if isinstance(value, str) else "object"


Name = Annotated[str, Field(max_length=64), AfterValidator(_no_nul)]
Text = Annotated[str, Field(max_length=20_000), AfterValidator(_no_nul)]
JsonObject = dict[str, Any]
Whole = Annotated[int, Between(0, 10_000)]


# --- the session ------------------------------------------------------------------------------


class _Strict(BaseModel):
    # JSON types only, never coerced ("1" is not 1, true is not 1); no NaN or infinity; no unknown key.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class PcmFormat(_Strict):
    type: Literal["audio/pcm"]
    rate: Annotated[int, Between(24000, 24000)] = 24000


class PcmuFormat(_Strict):
    type: Literal["audio/pcmu"]


class PcmaFormat(_Strict):
    type: Literal["audio/pcma"]


AudioFormat = Annotated[PcmFormat | PcmuFormat | PcmaFormat, Field(discriminator="type")]


class Transcription(_Strict):
    model: Annotated[str, OneOf(TRANSCRIPTION_MODELS)] | MISSING = MISSING
    language: Annotated[str, Field(max_length=16), AfterValidator(_no_nul)] | MISSING = MISSING
    languages: Annotated[list[Annotated[str, Field(max_length=16), AfterValidator(_no_nul)]], Field(max_length=20)] | MISSING = MISSING
    prompt: Text | MISSING = MISSING
    keywords: Annotated[list[Name], Field(max_length=100)] | MISSING = MISSING
    delay: Annotated[str, Field(max_length=16), AfterValidator(_no_nul)] | MISSING = MISSING


class ServerVad(_Strict):
    type: Literal["server_vad"]
    create_response: bool | MISSING = MISSING
    interrupt_response: bool | MISSING = MISSING
    threshold: Annotated[float, Between(0, 1)] | MISSING = MISSING
    prefix_padding_ms: Whole | MISSING = MISSING
    silence_duration_ms: Whole | MISSING = MISSING
    idle_timeout_ms: Annotated[int, Between(5000, 30000)] | MISSING | None = MISSING


class SemanticVad(_Strict):
    type: Literal["semantic_vad"]
    create_response: bool | MISSING = MISSING
    interrupt_response: bool | MISSING = MISSING
    eagerness: Annotated[str, OneOf(("low", "medium", "high", "auto"))] | MISSING = MISSING


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class NoiseReduction(_Strict):
    type: Annotated[str, OneOf(("near_field", "far_field"))] | MISSING = MISSING


class AudioInput(_Strict):
    format: AudioFormat | MISSING = MISSING
    transcription: Transcription | MISSING | None = MISSING
    noise_reduction: NoiseReduction | MISSING | None = MISSING
    turn_detection: TurnDetection | MISSING | None = MISSING


class CustomVoice(_Strict):
    id: Annotated[str, Field(max_length=200), AfterValidator(_no_nul)]


Voice = Annotated[
    Annotated[Annotated[str, OneOf(VOICES)], Tag("string")] | Annotated[CustomVoice, Tag("object")],
    Discriminator(_string_or_object),
]


class AudioOutput(_Strict):
    format: AudioFormat | MISSING = MISSING
    voice: Voice | MISSING = MISSING
    speed: Annotated[float, Between(0.25, 1.5)] | MISSING = MISSING


class Audio(_Strict):
    input: AudioInput | MISSING = MISSING
    output: AudioOutput | MISSING = MISSING


class FunctionTool(_Strict):
    type: Literal["function"]
    name: Name
    description: Text | MISSING = MISSING
    parameters: JsonObject | MISSING = MISSING


class McpTool(_Strict):
    type: Literal["mcp"]
    server_label: Name
    server_url: Annotated[str, Field(max_length=2000), AfterValidator(_no_nul)] | MISSING = MISSING
    connector_id: Name | MISSING = MISSING
    authorization: Annotated[str, Field(max_length=4000), AfterValidator(_no_nul)] | MISSING = MISSING
    headers: JsonObject | MISSING = MISSING
    allowed_tools: (
        Annotated[
            Annotated[list[Name], Field(max_length=100), Tag("list")] | Annotated[JsonObject, Tag("object")],
            Discriminator(lambda value: "list" if isinstance(value, list) else "object"),
        ]
        | MISSING
    ) = MISSING
    require_approval: (
        Annotated[
            Annotated[Annotated[str, OneOf(("always", "never"))], Tag("string")] | Annotated[JsonObject, Tag("object")],
            Discriminator(_string_or_object),
        ]
        | MISSING
    ) = MISSING
    server_description: Text | MISSING = MISSING


Tool = Annotated[FunctionTool | McpTool, Field(discriminator="type")]


class FunctionChoice(_Strict):
    type: Literal["function"]
    name: Name


class McpChoice(_Strict):
    type: Literal["mcp"]
    server_label: Name
    name: Name | MISSING = MISSING


ToolChoice = Annotated[
    Annotated[Annotated[str, OneOf(("auto", "none", "required"))], Tag("string")]
    | Annotated[Annotated[FunctionChoice | McpChoice, Field(discriminator="type")], Tag("object")],
    Discriminator(_string_or_object),
]


class TracingConfig(_Strict):
    workflow_name: Name | MISSING = MISSING
    group_id: Name | MISSING = MISSING
    metadata: JsonObject | MISSING = MISSING


Tracing = Annotated[
    Annotated[Annotated[str, OneOf(("auto",))], Tag("string")] | Annotated[TracingConfig, Tag("object")],
    Discriminator(_string_or_object),
]


class TokenLimits(_Strict):
    post_instructions: Annotated[int, Between(0, 1_000_000)] | MISSING = MISSING


class RetentionRatio(_Strict):
    type: Annotated[str, OneOf(("retention_ratio",))]
    retention_ratio: Annotated[float, Between(0, 1)]
    token_limits: TokenLimits | MISSING = MISSING


Truncation = Annotated[
    Annotated[Annotated[str, OneOf(("auto", "disabled"))], Tag("string")] | Annotated[RetentionRatio, Tag("object")],
    Discriminator(_string_or_object),
]
MaxTokens = Annotated[
    Annotated[Annotated[str, OneOf(("inf",))], Tag("string")] | Annotated[Annotated[int, Between(1, MAX_TOKENS_LIMIT)], Tag("number")],
    Discriminator(lambda value: "string" if value == "inf" else "number"),
]


class Prompt(_Strict):
    id: Name
    version: Name | MISSING = MISSING
    variables: JsonObject | MISSING = MISSING


class Reasoning(_Strict):
    effort: Annotated[str, OneOf(("minimal", "low", "medium", "high", "xhigh"))] | MISSING = MISSING


BetaAudioFormat = Annotated[str, OneOf(tuple(BETA_AUDIO_FORMATS))]


class SessionInput(_Strict):
    """A session in the GA shape, the seed's beta shape, or a mix (each beta field stands in for a
    GA one; giving both is refused after validation)."""

    # Ours (never sent upstream): the call's maximum duration, at most the configured one.
    max_duration_seconds: Annotated[int, AfterValidator(_max_duration)] | MISSING = MISSING
    # Shared by both shapes.
    type: Annotated[str, OneOf(("realtime",))] | MISSING = MISSING
    model: (
        Annotated[str, Field(max_length=100), AfterValidator(_model), Field(json_schema_extra={"examples": sorted(GA_MODELS)})] | MISSING
    ) = MISSING
    instructions: Annotated[str, AfterValidator(_instructions), AfterValidator(_no_nul)] | MISSING = MISSING
    tools: Annotated[list[Tool], Field(max_length=128)] | MISSING = MISSING
    tool_choice: ToolChoice | MISSING = MISSING
    # GA shape.
    output_modalities: Annotated[list[str], AfterValidator(_modalities_ga)] | MISSING = MISSING
    audio: Audio | MISSING = MISSING
    max_output_tokens: MaxTokens | MISSING = MISSING
    tracing: Tracing | MISSING | None = MISSING
    truncation: Truncation | MISSING = MISSING
    include: Annotated[list[Annotated[str, OneOf(("item.input_audio_transcription.logprobs",))]], Field(max_length=1)] | MISSING = MISSING
    prompt: Prompt | MISSING = MISSING
    reasoning: Reasoning | MISSING = MISSING
    parallel_tool_calls: bool | MISSING = MISSING
    # Seed (beta) shape.
    modalities: (
        Annotated[list[Annotated[str, OneOf(("text", "audio"))]], Field(max_length=2), AfterValidator(_modalities_beta)] | MISSING
    ) = MISSING
    voice: Annotated[str, OneOf(VOICES)] | MISSING = MISSING
    temperature: Annotated[float, Between(0.6, 1.2)] | MISSING = MISSING
    max_response_output_tokens: MaxTokens | MISSING = MISSING
    input_audio_format: BetaAudioFormat | MISSING = MISSING
    output_audio_format: BetaAudioFormat | MISSING = MISSING
    input_audio_transcription: Transcription | MISSING | None = MISSING
    turn_detection: TurnDetection | MISSING | None = MISSING


def session_json_schema() -> dict[str, Any]:
    """The JSON Schema of what `session` accepts (for the API's documentation)."""
    return SessionInput.model_json_schema()


# --- errors -----------------------------------------------------------------------------------

_FIELD_NAMES = frozenset(name for model in _Strict.__subclasses__() for name in model.model_fields)


def _field_path(error: ErrorDetails) -> str:
    """`session.tools[0].name` from pydantic's location, without the union branches' labels."""
    loc = error["loc"]
    path = "session"
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _FIELD_NAMES or (i == len(loc) - 1 and error["type"] == "extra_forbidden"):
            path += f".{part}"
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        path += "." + str(error.get("ctx", {}).get("discriminator", "type")).strip("'")
    return path


def _message(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "realtime":
        return str(ctx["message"])
    if kind == "union_tag_invalid":
        return _not_one_of(ctx["tag"], re.findall(r"'([^']*)'", str(ctx["expected_tags"])))
    if kind in ("string_too_long", "too_long"):
        limit = int(ctx.get("max_length", 0))
        if kind == "too_long":
            return _("must have at most %(n)d items.") % {"n": limit}
        return _("must be at most %(n)d characters.") % {"n": limit}
    messages = {
        "extra_forbidden": _("unknown parameter."),
        "missing": _("is required."),
        "union_tag_not_found": _("is required."),
        "string_type": _("must be a string."),
        "int_type": _("must be an integer."),
        "float_type": _("must be a number."),
        "finite_number": _("must be a number."),
        "bool_type": _("must be true or false."),
        "list_type": _("must be a list."),
        "dict_type": _("must be an object."),
        "model_type": _("must be an object."),
        "model_attributes_type": _("must be an object."),
    }
    return messages.get(kind, error["msg"])


# Free-form objects (tool parameters, tracing metadata, prompt variables, MCP headers) are the
# caller's JSON, forwarded upstream: deeper than this is abuse (OpenAI and the engine fail on it).
MAX_DEPTH = 32


def _check_text(value: Any, path: str, depth: int = 0, *, finite: bool = False) -> None:
    """Refuse, anywhere in the session, what pydantic's free-form `dict[str, Any]` lets through:
    lone surrogates (JSON allows "\\ud800"; the database, the SDK's encoder and OpenAI refuse them
    later), NaN and infinities (a multipart `session` is parsed by json.loads, which reads them), and
    nesting deeper than MAX_DEPTH. `finite` (after pydantic, which names typed fields' NaN itself)
    also refuses NaN and infinities."""
    if depth > MAX_DEPTH:
        raise InvalidInput(path, _("is nested too deeply (at most %(depth)d levels).") % {"depth": MAX_DEPTH})
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput(path, _("must be valid Unicode text.")) from None
    elif isinstance(value, float):
        if finite and not math.isfinite(value):
            raise InvalidInput(path, _("must be a finite number."))
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"{path}.{key}", depth + 1, finite=finite)
            _check_text(item, f"{path}.{key}", depth + 1, finite=finite)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_text(item, f"{path}[{i}]", depth + 1, finite=finite)


def _validate(raw: Any) -> dict[str, Any]:
    """The session as given, once valid; `InvalidInput` naming the first field at fault."""
    _check_text(raw, "session")
    try:
        SessionInput.model_validate(raw)
    except ValidationError as exc:
        # Unknown keys first, as they usually explain the rest (a misspelt field).
        error = min(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
        raise InvalidInput(_field_path(error), _message(error)) from None
    _check_text(raw, "session", finite=True)
    return dict(raw)


# --- translation to the GA session ------------------------------------------------------------

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
    session = _validate(raw)
    for beta, ga in _BETA_TO_GA.items():
        if beta in session and _has_path(session, ga):
            raise InvalidInput(f"session.{beta}", _("cannot be combined with '%(ga)s'; use one or the other.") % {"ga": ga})
    return translate(raw, session)


def _serve(model: str, path: str, notes: list[dict[str, Any]], warnings: list[dict[str, Any]]) -> str:
    """The model to send for `model` today: itself, or its successor once OpenAI has shut it down.

    `path` names the field in the session (GA shape). Today is the server's UTC date.
    """
    shutdown = SHUTDOWNS.get(model)
    if shutdown is None:
        return model
    successor: str | None = settings.REALTIME_MODEL_SUCCESSORS.get(shutdown.family)
    date = shutdown.date.isoformat()
    if timezone.now().date() >= shutdown.date:
        if successor is None:
            raise InvalidInput(
                f"session.{path}",
                _("'%(model)s' was shut down by OpenAI on %(date)s; choose another model.") % {"model": model, "date": date},
                code="model_shut_down",
            )
        notes.append({"field": path, "requested": model, "sent": successor, "reason": "model_shut_down"})
        return successor
    message = _("'%(model)s' will be shut down by OpenAI on %(date)s.") % {"model": model, "date": date}
    if successor is not None:
        message += " " + _("From that day, '%(successor)s' will serve it.") % {"successor": successor}
    warnings.append(
        {"code": "model_deprecated", "field": path, "model": model, "shutdown_date": date, "successor": successor, "message": message}
    )
    return model


def translate(requested: Any, session: dict[str, Any]) -> SessionConfig:
    """The GA session (and what we record) for a valid session in either shape."""
    notes: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    model = session.get("model", settings.REALTIME_DEFAULT_MODEL)
    aliased = settings.REALTIME_MODEL_ALIASES.get(model, model)
    if model != aliased:
        notes.append({"field": "model", "requested": model, "sent": aliased, "reason": "model_alias"})
    upstream_model = _serve(aliased, "model", notes, warnings)
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
    transcription = (audio.get("input") or {}).get("transcription")
    if isinstance(transcription, dict) and "model" in transcription:
        # A new dict: a beta session's transcription object is the validated input's own.
        audio["input"]["transcription"] = {
            **transcription,
            "model": _serve(transcription["model"], "audio.input.transcription.model", notes, warnings),
        }
    upstream["audio"] = audio
    voice_value = audio["output"]["voice"]
    voice = voice_value if isinstance(voice_value, str) else voice_value["id"]

    max_tokens = session.get("max_output_tokens", session.get("max_response_output_tokens"))
    if max_tokens is not None:
        upstream["max_output_tokens"] = max_tokens
    for key in _PASS_THROUGH:
        if key in session:
            upstream[key] = session[key]

    if "temperature" in session:
        notes.append({"field": "temperature", "requested": session["temperature"], "sent": None, "reason": "not_supported_upstream"})
    if "max_duration_seconds" in session:
        notes.append(
            {"field": "max_duration_seconds", "requested": session["max_duration_seconds"], "sent": None, "reason": "enforced_by_broker"}
        )
    if "modalities" in session and modalities != output_modalities:
        notes.append({"field": "modalities", "requested": modalities, "sent": output_modalities, "reason": "ga_single_modality"})

    return SessionConfig(
        requested=requested,
        model=model,
        upstream_model=upstream_model,
        voice=voice,
        modalities=list(modalities),
        instructions=session.get("instructions", ""),
        temperature=session.get("temperature"),
        max_output_tokens=max_tokens if isinstance(max_tokens, int) else None,
        upstream=upstream,
        notes=notes,
        warnings=warnings,
        max_duration_seconds=session.get("max_duration_seconds"),
    )
