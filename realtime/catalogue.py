"""OpenAI's models, voices and prices, as data (`catalogue.json`), in one place.

Read by the session validation (which models, voices and transcription models a session may
name), the settings (default prices and the retired beta names' replacements) and the demo page.

Each model entry has a `name`, its dated `snapshots` (billed and validated as the model), its
`modalities`, and its prices: `usd_per_million_tokens` (keys `<modality>_in`, `<modality>_cached`,
`<modality>_out`; null when unpublished) or, for transcription, `usd_per_minute`. Retired models
also name their `replacement`, the GA model that serves them today. Entries may grow more facts
(a shutdown date, say) without changing these.

Pure data, no Django: the settings module imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_DATA: dict[str, Any] = json.loads((Path(__file__).with_name("catalogue.json")).read_text(encoding="utf-8"))

Prices = dict[str, float]


def _names(entries: list[dict[str, Any]]) -> list[str]:
    return [name for entry in entries for name in (entry["name"], *entry["snapshots"])]


# GA realtime models a session may name, snapshots included.
GA_MODELS = frozenset(_names(_DATA["realtime_models"]))
TRANSCRIPTION_MODELS = tuple(_names(_DATA["transcription_models"]))
VOICES = tuple(_DATA["voices"])
DEFAULT_VOICE: str = _DATA["default_voice"]


def retired_aliases() -> dict[str, str]:
    """Retired (beta) model name, snapshots included -> the GA model that serves it."""
    return {name: entry["replacement"] for entry in _DATA["retired_models"] for name in (entry["name"], *entry["snapshots"])}


def token_prices() -> dict[str, Prices]:
    """Model family -> USD per 1M tokens, for every realtime model (GA or retired) with a price."""
    entries = [*_DATA["realtime_models"], *_DATA["retired_models"]]
    return {entry["name"]: dict(entry["usd_per_million_tokens"]) for entry in entries if entry["usd_per_million_tokens"]}


def transcription_prices() -> dict[str, Prices]:
    """Transcription model -> its prices ("per_minute" for models billed by audio duration)."""
    return {entry["name"]: {"per_minute": entry["usd_per_minute"]} for entry in _DATA["transcription_models"] if "usd_per_minute" in entry}
