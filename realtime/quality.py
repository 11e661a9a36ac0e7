"""Conversation quality of one call, measured from the server events its sideband receives.

`TurnMeter` folds events, in arrival order, into the figures stored on `Call.metrics`:

    {"turns": 3, "latency_ms": {"p50": 640, "p95": 910, "max": 930}, "interruptions": 1,
     "talk_seconds": {"caller": 7.4, "assistant": 9.1}, "silence_seconds": 12.0,
     "latency_histogram": {"700": 1, "1000": 2}}

- a **turn** is the caller stopping (`input_audio_buffer.speech_stopped`) followed by the first
  assistant audio: `output_audio_buffer.started` over WebRTC and SIP; where that event does not
  come (a WebSocket session, a transport that leaves it out) the first `response.output_audio.delta`
  or `response.output_audio_transcript.delta` stands for it. Its **latency** is the time between
  the two. A caller who speaks again before any answer starts a new turn: the answer replies to
  the last stop, so latency counts from there. `speech_stopped` comes after the session's VAD
  silence (`silence_duration_ms`), so the latency is what the model and the network add after
  OpenAI decided the caller had finished, not the silence the VAD waited for.
- an **interruption** is the assistant's audio cut short: the caller starting to speak while it
  plays (barge-in), the buffer cleared (`output_audio_buffer.cleared`, the answer to a client's
  `output_audio_buffer.clear` or to VAD), the item truncated (`conversation.item.truncated`), or a
  response cancelled (`response.done` with status `cancelled`: `response.cancel` or turn
  detection). One response interrupted counts once, whichever of these arrive.
- **talk time**: the caller's from `speech_started` to `speech_stopped`; the assistant's from its
  first audio to `output_audio_buffer.stopped`/`cleared` (or `response.done` when no buffer
  events come). **Silence**: the time neither talks, from the first event to the last (to the
  call's end once it ended).

- the **latency histogram**: turns per latency bucket (`LATENCY_EDGES_MS`, keyed by the bucket's
  upper bound in ms, "inf" past the last; buckets without a turn left out). The hourly counters
  add what a rewrite of the metrics adds to it (`services.call_record_metrics`), so each turn is
  counted once however often the figures are stored, and a recount reads the same from the calls.

Times are the monitor's **arrival times** (`received_at`), for every event alike. OpenAI's events
carry no wall-clock time (`audio_start_ms`/`audio_end_ms` count the input audio, and nothing
dates the assistant's audio), so arrival is the one clock both ends of an interval share; both
come down the same socket, so its transit cancels out of every interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FIRST_AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.output_audio_transcript.delta"})
# Every event the meter reads; the monitor measures only when one of these arrives.
MEASURED = frozenset(
    {
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "conversation.item.truncated",
        "response.done",
        *FIRST_AUDIO_DELTAS,
    }
)

# Upper bounds (ms) of the latency histogram's buckets, "inf" holds the rest: 100 ms apart where
# turns are common, wider past a second. Fixed: the hourly counters and the stored calls use them.
LATENCY_EDGES_MS = (200, 300, 400, 500, 600, 700, 800, 900, 1000, 1250, 1500, 2000, 3000, 5000)


def latency_bucket(ms: float) -> str:
    """The histogram bucket a turn of `ms` milliseconds falls in (its upper bound, or "inf")."""
    for edge in LATENCY_EDGES_MS:
        if ms <= edge:
            return str(edge)
    return "inf"


def latency_histogram(latencies_ms: list[float]) -> dict[str, int]:
    """Turns per bucket, in bucket order, empty buckets left out."""
    counts: dict[str, int] = {}
    for ms in latencies_ms:
        bucket = latency_bucket(ms)
        counts[bucket] = counts.get(bucket, 0) + 1
    order = [*map(str, LATENCY_EDGES_MS), "inf"]
    return {bucket: counts[bucket] for bucket in order if bucket in counts}


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), so p50 of [a, b] is their mean."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class TurnMeter:
    """Figures of one call so far; `add` every sideband event in arrival order, read `metrics()`."""

    latencies_ms: list[float] = field(default_factory=list)
    interruptions: int = 0
    caller_seconds: float = 0.0
    assistant_seconds: float = 0.0
    silence_seconds: float = 0.0
    first_at: datetime | None = None
    last_at: datetime | None = None
    # When the caller's current speech started (None: not speaking).
    caller_since: datetime | None = None
    # When the assistant's current audio started (None: not playing).
    assistant_since: datetime | None = None
    # Whether the playing audio came with `output_audio_buffer.started` (then its end is
    # `stopped`/`cleared`), or only with deltas (then `response.done` ends it).
    assistant_buffered: bool = False
    # The caller's last stop not answered yet: the start of the turn being measured.
    awaiting_since: datetime | None = None
    # Since when neither side talks (None while someone does).
    quiet_since: datetime | None = None
    # The response whose interruption was counted (or "" for the audio playing now, when the
    # events that cut it carry no response id), so one cut counts once.
    interrupted: str | None = None
    # Whether anything changed since the last `take_changes`.
    changed: bool = False

    def add(self, event_type: str, data: dict[str, Any], at: datetime) -> None:
        if self.first_at is None:
            self.first_at = self.quiet_since = at
        self.last_at = at
        if event_type not in MEASURED:
            return
        self.changed = True
        if event_type == "input_audio_buffer.speech_started":
            if self.assistant_since is not None:
                self._interrupt(str(data.get("response_id", "")))
            # Speaking again before an answer: the answer, when it comes, replies to the next stop.
            self.awaiting_since = None
            self._talk(at, caller=True)
        elif event_type == "input_audio_buffer.speech_stopped":
            if self.caller_since is not None:
                self.caller_seconds += (at - self.caller_since).total_seconds()
                self.caller_since = None
                self._maybe_quiet(at)
            self.awaiting_since = at
        elif event_type == "output_audio_buffer.started" or event_type in FIRST_AUDIO_DELTAS:
            buffered = event_type == "output_audio_buffer.started"
            if self.assistant_since is None or (buffered and not self.assistant_buffered):
                if self.assistant_since is None:
                    self._talk(at, caller=False)
                self.assistant_buffered = self.assistant_buffered or buffered
            if self.awaiting_since is not None:
                self.latencies_ms.append((at - self.awaiting_since).total_seconds() * 1000)
                self.awaiting_since = None
        elif event_type in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
            if event_type == "output_audio_buffer.cleared" and self.assistant_since is not None:
                self._interrupt(str(data.get("response_id", "")))
            self._silence_assistant(at)
        elif event_type == "conversation.item.truncated":
            self._interrupt("")
        elif event_type == "response.done":
            response = data.get("response") or {}
            if response.get("status") == "cancelled":
                self._interrupt(str(response.get("id", "")))
            if not self.assistant_buffered:
                self._silence_assistant(at)

    def _interrupt(self, response_id: str) -> None:
        # Several events report the same cut (speech_started, cleared, truncated, a cancelled
        # response.done): count the first. Ids differ only between two different responses.
        if self.interrupted is not None and (not response_id or not self.interrupted or self.interrupted == response_id):
            return
        self.interrupted = response_id
        self.interruptions += 1

    def _talk(self, at: datetime, *, caller: bool) -> None:
        if self.quiet_since is not None:
            self.silence_seconds += (at - self.quiet_since).total_seconds()
            self.quiet_since = None
        if caller:
            self.caller_since = self.caller_since or at
        else:
            self.assistant_since = at
            self.interrupted = None

    def _silence_assistant(self, at: datetime) -> None:
        if self.assistant_since is not None:
            self.assistant_seconds += (at - self.assistant_since).total_seconds()
            self.assistant_since = None
            self.assistant_buffered = False
            self._maybe_quiet(at)

    def _maybe_quiet(self, at: datetime) -> None:
        if self.caller_since is None and self.assistant_since is None:
            self.quiet_since = at

    def metrics(self, *, until: datetime | None = None) -> dict[str, Any]:
        """The stored shape. Talk and silence still running count up to `until` (the call's end),
        or to the last event received."""
        end = until or self.last_at
        caller, assistant, silence = self.caller_seconds, self.assistant_seconds, self.silence_seconds
        if end is not None:
            if self.caller_since is not None:
                caller += max((end - self.caller_since).total_seconds(), 0.0)
            if self.assistant_since is not None:
                assistant += max((end - self.assistant_since).total_seconds(), 0.0)
            if self.quiet_since is not None:
                silence += max((end - self.quiet_since).total_seconds(), 0.0)
        latency: dict[str, int | None] = {"p50": None, "p95": None, "max": None}
        if self.latencies_ms:
            latency = {
                "p50": round(percentile(self.latencies_ms, 0.5)),
                "p95": round(percentile(self.latencies_ms, 0.95)),
                "max": round(max(self.latencies_ms)),
            }
        return {
            "turns": len(self.latencies_ms),
            "latency_ms": latency,
            "interruptions": self.interruptions,
            "talk_seconds": {"caller": round(caller, 3), "assistant": round(assistant, 3)},
            "silence_seconds": round(silence, 3),
            "latency_histogram": latency_histogram(self.latencies_ms),
        }

    def take_changes(self) -> dict[str, Any] | None:
        """The metrics if an event changed them since the last call, else None (nothing to store)."""
        if not self.changed:
            return None
        self.changed = False
        return self.metrics()
