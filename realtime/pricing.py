"""Cost estimates from token usage, with the per-model price table in settings.

Per response (OpenAI's accounting): for each input modality, uncached tokens at the input rate and
cached tokens (a subset of input) at the cached rate, plus output tokens at the output rates.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings

MILLION = Decimal(1_000_000)


def _lookup(table: dict[str, dict[str, float]], model: str) -> dict[str, float] | None:
    # Dated snapshots (gpt-realtime-2025-08-28) bill as their family: the longest matching prefix.
    matches = [name for name in table if model == name or model.startswith(f"{name}-")]
    return table[max(matches, key=len)] if matches else None


def prices_for(model: str) -> dict[str, float] | None:
    return _lookup(settings.REALTIME_PRICING, model)


def duration_cost(model: str, seconds: float) -> Decimal | None:
    """USD for a call of `seconds` on a model billed by the minute, or None for other models."""
    prices = prices_for(model)
    if prices is None or "per_minute" not in prices:
        return None
    return (Decimal(str(seconds)) / 60 * Decimal(str(prices["per_minute"]))).quantize(Decimal("0.000001"))


def _n(details: dict[str, Any] | None, key: str) -> int:
    value = (details or {}).get(key) or 0
    return int(value) if isinstance(value, (int, float)) else 0


def response_cost(usage: dict[str, Any], prices: dict[str, float]) -> Decimal:
    """USD for one `response.done` usage object."""
    inputs = usage.get("input_token_details") or {}
    cached = inputs.get("cached_tokens_details") or {}
    outputs = usage.get("output_token_details") or {}
    total = Decimal(0)
    for modality in ("text", "audio", "image"):
        tokens, hits = _n(inputs, f"{modality}_tokens"), _n(cached, f"{modality}_tokens")
        # Clamped: OpenAI's own examples show more cached than input tokens.
        uncached = max(tokens - hits, 0)
        total += uncached * Decimal(str(prices.get(f"{modality}_in", 0))) + min(hits, tokens) * Decimal(
            str(prices.get(f"{modality}_cached", 0))
        )
    total += _n(outputs, "text_tokens") * Decimal(str(prices.get("text_out", 0)))
    total += _n(outputs, "audio_tokens") * Decimal(str(prices.get("audio_out", 0)))
    return total / MILLION


def transcription_cost(usage: dict[str, Any], model: str) -> Decimal | None:
    """USD for one input transcription's usage, or None if the model has no price."""
    prices = _lookup(settings.REALTIME_TRANSCRIPTION_PRICING, model)
    if prices is None:
        return None
    if usage.get("type") == "duration":
        return Decimal(str(usage.get("seconds") or 0)) / 60 * Decimal(str(prices.get("per_minute", 0)))
    details = usage.get("input_token_details") or {}
    total = _n(details, "text_tokens") * Decimal(str(prices.get("text_in", 0)))
    total += _n(details, "audio_tokens") * Decimal(str(prices.get("audio_in", 0)))
    total += _n(usage, "output_tokens") * Decimal(str(prices.get("text_out", 0)))
    return total / MILLION


def add_usage(total: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """Sum two usage objects field by field (nested counts add up; other values are ignored)."""
    merged = dict(total)
    for key, value in usage.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, dict):
            merged[key] = add_usage(merged.get(key) or {}, value)
        elif isinstance(value, (int, float)):
            merged[key] = (merged.get(key) or 0) + value
    return merged
