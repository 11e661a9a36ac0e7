"""OpenAI's GA wire shapes, as the engine produces and checks them: ids, errors, sessions, events.

Only GA names and shapes exist here; a beta-shaped session is refused the way OpenAI refuses it
("Unknown parameter"), so the broker's translation is what gets exercised.
"""

from __future__ import annotations

import copy
import math
import secrets
import time
from typing import Any

MODELS = frozenset(
    "gpt-realtime gpt-realtime-2025-08-28 gpt-realtime-1.5 gpt-realtime-2 gpt-realtime-2.1 gpt-realtime-2.1-mini "
    "gpt-realtime-mini gpt-realtime-mini-2025-10-06 gpt-realtime-mini-2025-12-15 gpt-audio-1.5 gpt-audio-mini "
    "gpt-audio-mini-2025-10-06 gpt-audio-mini-2025-12-15 gpt-realtime-translate".split()
)
VOICES = frozenset("alloy ash ballad coral echo sage shimmer verse marin cedar".split())
SESSION_KEYS = frozenset(
    "type model output_modalities instructions audio max_output_tokens tools tool_choice tracing truncation "
    "include prompt reasoning parallel_tool_calls".split()
)
DEFAULT_INSTRUCTIONS = "You are a helpful, witty, and friendly AI."


def new_id(prefix: str, *, length: int = 24) -> str:
    return f"{prefix}_{secrets.token_hex(length // 2)}"


class ApiError(Exception):
    """An error answered in OpenAI's REST shape: {"error": {message, type, param, code}}."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None, kind: str = "invalid_request_error"
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def check_session(session: Any) -> dict[str, Any]:
    """Validate a GA session the way OpenAI does, before the call exists."""
    if not isinstance(session, dict):
        raise ApiError(400, "Invalid type for 'session': expected an object.", param="session", code="invalid_type")
    for key in session:
        if key not in SESSION_KEYS:
            raise ApiError(400, f"Unknown parameter: 'session.{key}'.", param=f"session.{key}", code="unknown_parameter")
    if session.get("type") != "realtime":
        raise ApiError(400, "Missing required parameter: 'session.type'.", param="session.type", code="missing_required_parameter")
    model = session.get("model", "gpt-realtime")
    if model not in MODELS:
        raise ApiError(400, f'Model "{model}" is not supported in realtime mode.', param="session.model", code="invalid_model")
    if session.get("output_modalities", ["audio"]) not in (["audio"], ["text"]):
        raise ApiError(400, "Invalid value for 'session.output_modalities'.", param="session.output_modalities", code="invalid_value")
    audio = session.get("audio", {})
    for part in audio if isinstance(audio, dict) else ():
        if part not in ("input", "output"):
            raise ApiError(400, f"Unknown parameter: 'session.audio.{part}'.", param=f"session.audio.{part}", code="unknown_parameter")
    voice = (audio.get("output") or {}).get("voice", "alloy") if isinstance(audio, dict) else "alloy"
    if isinstance(voice, str) and voice not in VOICES:
        raise ApiError(
            400,
            f"Invalid value: '{voice}'. Supported values are: {', '.join(sorted(VOICES))}.",
            param="session.audio.output.voice",
            code="invalid_value",
        )
    tokens = session.get("max_output_tokens", "inf")
    if tokens != "inf" and (not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= 4096):
        raise ApiError(
            400,
            "Invalid 'session.max_output_tokens': integer between 1 and 4096 or 'inf'.",
            param="session.max_output_tokens",
            code="invalid_value",
        )
    return session


def effective_session(requested: dict[str, Any], *, session_id: str, expires_at: int) -> dict[str, Any]:
    """The full `realtime.session` object: server defaults with the requested fields merged in."""
    session: dict[str, Any] = {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy", "speed": 1.0},
        },
        "include": None,
    }
    return merge(session, {k: v for k, v in requested.items() if k != "type"})


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Partial update as `session.update` does it: nested objects merge, other values replace."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "turn_detection":
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def server_event(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"type": event_type, "event_id": new_id("event"), **fields}


def error_event(message: str, *, code: str, param: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    error = {"type": "invalid_request_error", "code": code, "message": message, "param": param, "event_id": event_id}
    return server_event("error", error=error)


def expires_at(max_seconds: float) -> int:
    return int(time.time() + max_seconds)


# --- conversation shapes --------------------------------------------------------------------


def tokens_for_text(text: str) -> int:
    """About four characters a token, as OpenAI's rule of thumb; deterministic for tests."""
    return math.ceil(len(text) / 4)


def tokens_for_user_audio(ms: float) -> int:
    # OpenAI's published rule: user audio is about 1 token per 100 ms.
    return math.ceil(ms / 100)


def tokens_for_assistant_audio(ms: float) -> int:
    # ... and assistant audio about 1 token per 50 ms.
    return math.ceil(ms / 50)


def user_item(item_id: str, *, text: str | None = None, status: str = "completed") -> dict[str, Any]:
    content = {"type": "input_text", "text": text} if text is not None else {"type": "input_audio", "transcript": None}
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status, "role": "user", "content": [content]}


def assistant_item(item_id: str, *, audio: bool, text: str | None, status: str) -> dict[str, Any]:
    content = {"type": "output_audio", "transcript": text} if audio else {"type": "output_text", "text": text}
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status, "role": "assistant", "content": [content]}


def usage(*, text_in: int, audio_in: int, text_cached: int, audio_cached: int, text_out: int, audio_out: int) -> dict[str, Any]:
    """A `response.done` usage object; cached tokens are a subset of input tokens, as OpenAI counts them."""
    input_tokens, output_tokens = text_in + audio_in, text_out + audio_out
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": 0,
            "cached_tokens": text_cached + audio_cached,
            "cached_tokens_details": {"text_tokens": text_cached, "audio_tokens": audio_cached, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def response(
    response_id: str,
    *,
    session: dict[str, Any],
    conversation_id: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": None,
        "output": output,
        "conversation_id": conversation_id,
        "output_modalities": session["output_modalities"],
        "max_output_tokens": session["max_output_tokens"],
        "audio": {"output": {"format": session["audio"]["output"]["format"], "voice": session["audio"]["output"]["voice"]}},
        "usage": usage,
        "metadata": None,
    }
