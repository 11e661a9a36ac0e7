"""OpenAI's models, voices and prices, as data (`catalogue.json`), in one place.

Read by the session validation (which models, voices and transcription models a session may
name), the settings (default prices and the retired beta names' replacements) and the demo page.

Each model entry has a `name`, its dated `snapshots` (billed and validated as the model), its
`modalities`, and its prices: `usd_per_million_tokens` (keys `<modality>_in`, `<modality>_cached`,
`<modality>_out`; null when unpublished) or, for transcription, `usd_per_minute`. Retired models
also name their `replacement`, the GA model that serves them today. Realtime and transcription
models carry OpenAI's `shutdown_date` (YYYY-MM-DD, null when none is announced) and the `successor`
a request naming them is sent to from that day (null: such a request is refused then).

Pure data, no Django: the settings module imports it.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

_DATA: dict[str, Any] = json.loads((Path(__file__).with_name("catalogue.json")).read_text(encoding="utf-8"))

Prices = dict[str, float]


def _names(entries: list[dict[str, Any]]) -> list[str]:
    return [name for entry in entries for name in (entry["name"], *entry["snapshots"])]


# GA realtime models a session may name, snapshots included.
GA_MODELS = frozenset(_names(_DATA["realtime_models"]))
TRANSCRIPTION_MODELS = tuple(_names(_DATA["transcription_models"]))
VOICES = tuple(_DATA["voices"])
DEFAULT_VOICE: str = _DATA["default_voice"]
# The transcription model the demo page asks for: current (no shutdown announced) and made for
# realtime sessions' input audio, billed by the minute.
DEFAULT_TRANSCRIPTION_MODEL: str = _DATA["default_transcription_model"]


@dataclass(frozen=True)
class Shutdown:
    """A model OpenAI shuts down: the family it belongs to (its successor is keyed by it) and the day."""

    family: str
    date: datetime.date


def _shutdowns(entries: list[dict[str, Any]]) -> dict[str, Shutdown]:
    return {
        name: Shutdown(entry["name"], datetime.date.fromisoformat(entry["shutdown_date"]))
        for entry in entries
        if entry.get("shutdown_date")
        for name in (entry["name"], *entry["snapshots"])
    }


# Model name (snapshots included) -> its announced shutdown, for realtime and transcription models.
SHUTDOWNS: dict[str, Shutdown] = {**_shutdowns(_DATA["realtime_models"]), **_shutdowns(_DATA["transcription_models"])}

Kind = Literal["realtime", "transcription", "retired"]


def entries() -> list[dict[str, Any]]:
    """Every known model as published by `GET /api/realtime/models` (a copy, with its kind)."""
    kinds: tuple[tuple[Kind, str], ...] = (
        ("realtime", "realtime_models"),
        ("transcription", "transcription_models"),
        ("retired", "retired_models"),
    )
    keys = ("snapshots", "shutdown_date", "successor", "replacement", "modalities", "usd_per_million_tokens", "usd_per_minute")
    return [
        {"name": entry["name"], "kind": kind, **{key: entry.get(key) for key in keys}}
        for kind, section in kinds
        for entry in _DATA[section]
    ]


def successors() -> dict[str, str]:
    """Model family -> the model that serves it once it is shut down (where OpenAI names one)."""
    return {
        entry["name"]: entry["successor"]
        for section in ("realtime_models", "transcription_models")
        for entry in _DATA[section]
        if entry.get("successor")
    }


def retired_aliases() -> dict[str, str]:
    """Retired (beta) model name, snapshots included -> the GA model that serves it."""
    return {name: entry["replacement"] for entry in _DATA["retired_models"] for name in (entry["name"], *entry["snapshots"])}


def token_prices() -> dict[str, Prices]:
    """Model family -> its prices: USD per 1M tokens, or "per_minute" of call for models billed by
    duration, for every realtime model (GA or retired) with a published price."""
    table: dict[str, Prices] = {}
    for entry in [*_DATA["realtime_models"], *_DATA["retired_models"]]:
        if entry.get("usd_per_million_tokens"):
            table[entry["name"]] = dict(entry["usd_per_million_tokens"])
        elif entry.get("usd_per_minute") is not None:
            table[entry["name"]] = {"per_minute": entry["usd_per_minute"]}
    return table


def transcription_prices() -> dict[str, Prices]:
    """Transcription model -> its prices ("per_minute" for models billed by audio duration)."""
    return {entry["name"]: {"per_minute": entry["usd_per_minute"]} for entry in _DATA["transcription_models"] if "usd_per_minute" in entry}


def published(*, today: datetime.date, successors: dict[str, str]) -> list[dict[str, Any]]:
    """The catalogue as shown to integrators and staff: each model with its status on `today`
    ("available", "deprecated" before its shutdown date, "shut_down" from it, "retired" for the
    beta names served through an alias) and the successor configured for it."""
    shown = []
    for entry in entries():
        shutdown = entry["shutdown_date"]
        if entry["kind"] == "retired":
            status = "retired"
        elif shutdown is None:
            status = "available"
        else:
            status = "shut_down" if today >= datetime.date.fromisoformat(shutdown) else "deprecated"
        successor = successors.get(entry["name"]) if entry["kind"] != "retired" else None
        shown.append({**entry, "successor": successor, "status": status})
    return shown
