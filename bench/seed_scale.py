"""Fill a migrated database with a realistic call history, for scale benchmarks and trials.

    DATABASE_URL=sqlite:///big.sqlite3 python manage.py migrate
    DATABASE_URL=sqlite:///big.sqlite3 python bench/seed_scale.py --calls 1000000 [--events-per-call 10]

What it writes, like a support line taking calls for 90 days: about 95 % ended calls (hung up
through the API, by the caller or the model, by staff, by the limits), 4 % failed (upstream
refused), 1 % active (started in the last minutes, still talking); several models (seed aliases
included), voices, sources and API keys (a fifth of the calls made without one: staff, local
mode); real-size SDP offers and answers and session documents; an audit trail per call (created,
answered, ended, upstream hangup) and sideband events (speech, transcripts, responses with usage),
whose usage, tokens and cost are the call's. The statistics counters (hourly ones included) are added in step, so the
figures equal a recount (`--check` recounts at the end).

Rows are written in bulk (one transaction per chunk of calls, executemany on SQLite with its
durability relaxed for the load, COPY on PostgreSQL), not through the services: a million calls
through the API would take hours. Appends to what is there; prints what it wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import OperationalError, connection, transaction  # noqa: E402

from realtime import counters, pricing, quality, services  # noqa: E402
from realtime.models import ApiKey, Call, CallEvent  # noqa: E402

DAYS = 90
MODELS = [  # (asked for, share)
    ("gpt-realtime", 45),
    ("gpt-realtime-mini", 25),
    ("gpt-4o-realtime-preview", 15),
    ("gpt-4o-mini-realtime-preview", 10),
    ("gpt-realtime-2", 5),
]
VOICES = ["alloy", "ash", "ballad", "cedar", "coral", "echo", "marin", "sage", "shimmer", "verse"]
END_REASONS = [  # for ended calls
    (Call.EndReason.API_HANGUP, 45),
    (Call.EndReason.REMOTE_HANGUP, 35),
    (Call.EndReason.IDLE_TIMEOUT, 8),
    (Call.EndReason.ADMIN_HANGUP, 4),
    (Call.EndReason.MAX_DURATION, 3),
    (Call.EndReason.SETUP_TIMEOUT, 2),
    (Call.EndReason.UPSTREAM_ERROR, 2),
    (Call.EndReason.LOST, 1),
]
INSTRUCTIONS = (
    "Tu es l'assistant vocal du service client de La Poste. Réponds en français, poliment et brièvement. "
    "Aide l'appelant à suivre un colis (numéro à 13 caractères), à modifier une livraison ou à trouver un bureau de poste. "
    "Ne donne jamais d'informations personnelles sans vérification. Si la demande sort de ton champ, propose un conseiller."
)
CALL_COLUMNS = [
    "id",
    "call_id",
    "upstream_id",
    "source",
    "status",
    "model",
    "voice",
    "modalities",
    "instructions",
    "temperature",
    "max_output_tokens",
    "session_requested",
    "upstream_model",
    "session_upstream",
    "api_key_id",
    "sdp_offer",
    "sdp_answer",
    "created_at",
    "answered_at",
    "ended_at",
    "duration_seconds",
    "upstream_closed_at",
    "hangup_attempts",
    "hangup_retry_at",
    "max_duration_seconds",
    "last_activity_at",
    "deadline_at",
    "end_reason",
    "error_message",
    "usage",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "has_transcript",
    "monitor_owner",
    "monitor_lease_until",
    "sip_caller",
    "sip_called",
    "sip_headers",
    "transferred_to",
    "metrics",
    "latency_p95_ms",
    "latency_max_ms",
]
EVENT_COLUMNS = ["id", "call_id", "event_type", "created_at", "data", "actor", "upstream_event_id"]


def _new_key(name: str) -> int:
    key = ApiKey(name=name)
    services.api_key_create(key, by=services.SYSTEM)
    return key.pk


def weighted(rng: random.Random, choices: list[tuple[str, int]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def real_offer() -> str:
    """An offer from a real aiortc caller (audio and the events data channel), as browsers send."""
    import asyncio

    from localrealtime.caller import sample_offer

    return asyncio.run(sample_offer())


class Documents:
    """Offers and answers of real size, different per call where real ones differ (ICE credentials,
    fingerprint, session id), cheap to make a million of."""

    def __init__(self, offer: str, rng: random.Random) -> None:
        self.rng = rng
        # A browser offer carries more candidates than aiortc's: pad to Chrome's usual 4-6 KiB.
        lines = offer.rstrip("\r\n").split("\r\n")
        candidates = [line for line in lines if line.startswith("a=candidate:")]
        while len("\r\n".join(lines)) < 4500 and candidates:
            lines.extend(c.replace(" typ host", f" typ srflx raddr 10.0.{len(lines) % 250}.1 rport 9") for c in candidates)
        self.offer = "\r\n".join(lines) + "\r\n"
        answer = [line for line in lines if not line.startswith("a=candidate:") or " typ host" in line][:60]
        self.answer = "\r\n".join(line.replace("a=setup:actpass", "a=setup:active") for line in answer) + "\r\n"

    def pair(self) -> tuple[str, str]:
        token = f"{self.rng.getrandbits(128):032x}"
        # The o= line and the ICE password differ per call; the rest is the same shape.
        return (
            self.offer.replace("a=ice-pwd:", f"a=ice-pwd:{token[:22]}", 1),
            self.answer.replace("a=ice-pwd:", f"a=ice-pwd:{token[10:]}", 1),
        )


def usage_object(n_in: int, n_out: int) -> dict[str, Any]:
    audio_in, audio_out = n_in * 3 // 4, n_out * 4 // 5
    cached = n_in // 3
    return {
        "total_tokens": n_in + n_out,
        "input_tokens": n_in,
        "output_tokens": n_out,
        "input_token_details": {
            "text_tokens": n_in - audio_in,
            "audio_tokens": audio_in,
            "image_tokens": 0,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": cached // 2, "audio_tokens": cached - cached // 2, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": n_out - audio_out, "audio_tokens": audio_out},
    }


# The shape of a conversation on the sideband, repeated for as long as the call's events last.
TURN = [
    ("input_audio_buffer.speech_started", lambda i: {"audio_start_ms": 1200 * i, "item_id": f"item_u{i}"}),
    ("input_audio_buffer.speech_stopped", lambda i: {"audio_end_ms": 1200 * i + 900, "item_id": f"item_u{i}"}),
    (
        "conversation.item.input_audio_transcription.completed",
        lambda i: {
            "item_id": f"item_u{i}",
            "content_index": 0,
            "transcript": "Bonjour, je voudrais savoir où en est mon colis, le numéro est 6A12345678901.",
            "usage": {"type": "duration", "seconds": 4},
            "deltas": 9,
        },
    ),
    (
        "conversation.item.done",
        lambda i: {
            "item": {
                "id": f"item_a{i}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {
                        "type": "output_audio",
                        "transcript": "Votre colis est en cours d'acheminement et sera livré demain avant midi. Puis-je vous aider pour autre chose ?",
                    }
                ],
            }
        },
    ),
    ("response.done", None),  # filled with the turn's usage
    ("output_audio_buffer.stopped", lambda i: {"response_id": f"resp_{i}"}),
]


class Conversations:
    """Per number of sideband events: their types and data, and the usage and cost they add up to."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, str], tuple[list[tuple[str, str]], dict[str, Any], Decimal | None, bool]] = {}

    def get(self, n: int, upstream_model: str) -> tuple[list[tuple[str, str]], dict[str, Any], Decimal | None, bool]:
        key = (n, upstream_model)
        if key not in self._cache:
            events: list[tuple[str, str]] = [("session.created", json.dumps({"session": {"type": "realtime", "model": upstream_model}}))]
            usage: dict[str, Any] = {}
            prices = pricing.prices_for(upstream_model)
            cost = Decimal(0) if prices is not None else None
            transcription = pricing.transcription_cost({"type": "duration", "seconds": 4}, "gpt-realtime-whisper")
            transcript = False
            for i in range(n - 1):
                kind, make = TURN[i % len(TURN)]
                turn = i // len(TURN)
                if kind == "response.done":
                    response_usage = usage_object(900 + 350 * turn, 260 + 40 * turn)
                    data: dict[str, Any] = {"response": {"id": f"resp_{turn}", "status": "completed", "usage": response_usage}}
                    usage = pricing.add_usage(usage, {**response_usage, "responses": 1})
                    if cost is not None and prices is not None:
                        cost += pricing.response_cost(response_usage, prices)
                else:
                    assert make is not None
                    data = make(turn)
                if kind == "conversation.item.input_audio_transcription.completed":
                    usage["transcription"] = pricing.add_usage(usage.get("transcription") or {}, {**data["usage"], "items": 1})
                    if cost is not None and transcription is not None:
                        cost += transcription
                transcript = transcript or kind in ("conversation.item.done", "conversation.item.input_audio_transcription.completed")
                events.append((kind, json.dumps(data)))
            self._cache[key] = (events[:n], usage, None if cost is None else cost.quantize(Decimal("0.000001")), transcript)
        return self._cache[key]


class Writer:
    """Writes chunks of rows on a thread of its own while the next chunk is being made (the
    database drivers release the GIL while they work): executemany on SQLite, COPY on PostgreSQL,
    one transaction per chunk."""

    def __init__(self) -> None:
        connection.ensure_connection()
        self.raw = connection.connection
        self.postgresql = connection.vendor == "postgresql"
        self.queue: queue.Queue[list[tuple[str, list[str], list[tuple[Any, ...]]]] | None] = queue.Queue(maxsize=2)
        self.seconds = 0.0
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="seed-writer", daemon=True)
        self.thread.start()

    def put(self, tables: list[tuple[str, list[str], list[tuple[Any, ...]]]]) -> None:
        if self.failure is not None:
            raise self.failure
        self.queue.put(tables)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.failure is not None:
            raise self.failure

    def _run(self) -> None:
        while (tables := self.queue.get()) is not None:
            if self.failure is not None:
                continue
            began = time.monotonic()
            try:
                self._write(tables)
            except BaseException as exc:
                self.failure = exc
            self.seconds += time.monotonic() - began

    def _write(self, tables: list[tuple[str, list[str], list[tuple[Any, ...]]]]) -> None:
        quote = connection.ops.quote_name
        if self.postgresql:
            with self.raw.transaction(), self.raw.cursor() as cursor:
                for table, columns, rows in tables:
                    with cursor.copy(f"COPY {quote(table)} ({', '.join(map(quote, columns))}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
            return
        self.raw.execute("BEGIN")
        try:
            for table, columns, rows in tables:
                placeholders = ", ".join("?" * len(columns))
                self.raw.executemany(f"INSERT INTO {quote(table)} ({', '.join(map(quote, columns))}) VALUES ({placeholders})", rows)
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")


def next_id(model: type[Call] | type[CallEvent]) -> int:
    last = model.objects.order_by("-id").values_list("id", flat=True).first()
    return (last or 0) + 1


class Clock:
    """Times as integer microseconds since the epoch, written in the database's text format (UTC)
    without building a datetime per value: a seed writes tens of millions of them."""

    def __init__(self, postgresql: bool) -> None:
        self.suffix = "+00" if postgresql else ""
        self._days: dict[int, str] = {}

    def text(self, us: int | None) -> str | None:
        if us is None:
            return None
        day, rest = divmod(us, 86_400_000_000)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = self._days[day] = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d ")
        seconds, micro = divmod(rest, 1_000_000)
        hours, seconds = divmod(seconds, 3600)
        return f"{prefix}{hours:02d}:{seconds // 60:02d}:{seconds % 60:02d}.{micro:06d}{self.suffix}"


def seed(*, calls: int, events_per_call: float, chunk: int, seed_value: int, keys: int, active: float = 1.0) -> dict[str, Any]:
    rng = random.Random(seed_value)
    now = int(time.time() * 1_000_000)
    start = now - DAYS * 86_400_000_000
    aliases = settings.REALTIME_MODEL_ALIASES
    docs = Documents(real_offer(), rng)
    conversations = Conversations()
    api_keys = [_new_key(f"Intégrateur {i + 1}") for i in range(keys)]
    key_choices: list[int | None] = [None, *api_keys]
    key_weights = [20.0] + [80 / max(keys, 1)] * keys
    sqlite = connection.vendor == "sqlite"
    if sqlite:
        with connection.cursor() as cursor:
            # For the load only: a crash mid-seed loses the seed, nothing else is in these transactions.
            cursor.execute("PRAGMA synchronous=OFF")
            # No write-ahead log during the load (every page would be written twice); back after.
            # SQLite leaves WAL only when no other connection has the database open (a running
            # server, a test's other threads): then the load keeps the log, only slower.
            cursor.execute("PRAGMA journal_mode")
            journal = cursor.fetchone()[0]
            with contextlib.suppress(OperationalError):
                cursor.execute("PRAGMA journal_mode=MEMORY")
            cursor.execute("PRAGMA cache_size=-1000000")
            cursor.execute("PRAGMA temp_store=MEMORY")
    clock = Clock(postgresql=not sqlite)
    at = clock.text
    writer = Writer()
    call_pk, event_pk = next_id(Call), next_id(CallEvent)
    # Ended calls carry most events: 4 of the audit trail, the rest from the sideband.
    upstream_events = max(0.0, (events_per_call - 0.04 * 2 - 0.01 * 4) / 0.95 - 4)
    whole, fraction = int(upstream_events), upstream_events - int(upstream_events)
    groups: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0, 0, 0.0, 0, 0, 0])
    events_by_key: dict[int | None, int] = defaultdict(int)
    # The hourly counters' groups: (creation hour in µs, upstream model, status, end reason, duration bucket).
    hour_groups: dict[tuple[int, str, str, str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0, 0, 0, 0])
    # Measured turns per (creation hour in µs, upstream model): the latency histograms summed.
    turn_hours: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    by_status: dict[str, int] = defaultdict(int)
    offer_bytes = answer_bytes = 0
    span = now - 30 * 60_000_000 - start
    limit = settings.REALTIME_MAX_DURATION_SECONDS
    setup_timeout = float(settings.REALTIME_SETUP_TIMEOUT_SECONDS)
    session_upstream_base = {
        "type": "realtime",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-realtime-whisper", "language": "fr"},
                "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500},
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "speed": 1.0},
        },
        "instructions": INSTRUCTIONS,
    }
    sessions: dict[tuple[str, str], tuple[str, str]] = {}
    created_json: dict[tuple[str, str, str], str] = {}
    failed_json = json.dumps({"code": "upstream_error", "message": "OpenAI answered 500 Internal Server Error.", "details": {}})
    statuses, status_weights = [Call.Status.FAILED, Call.Status.ACTIVE, Call.Status.ENDED], [4, active, 96 - active]
    models, model_weights = [m for m, _ in MODELS], [w for _, w in MODELS]
    reasons, reason_weights = [r for r, _ in END_REASONS], [w for _, w in END_REASONS]
    began = time.monotonic()
    done = 0
    while done < calls:
        size = min(chunk, calls - done)
        call_rows: list[tuple[Any, ...]] = []
        event_rows: list[tuple[Any, ...]] = []
        # Drawn a chunk at a time: one call to `choices` per column, not one per row.
        chunk_status = rng.choices(statuses, weights=status_weights, k=size)
        chunk_model = rng.choices(models, weights=model_weights, k=size)
        chunk_voice = rng.choices(VOICES, k=size)
        chunk_key = rng.choices(key_choices, weights=key_weights, k=size)
        chunk_reason = rng.choices(reasons, weights=reason_weights, k=size)
        for n, i in enumerate(range(done, done + size)):
            status, model, voice, api_key_id, reason = chunk_status[n], chunk_model[n], chunk_voice[n], chunk_key[n], chunk_reason[n]
            upstream_model = aliases.get(model, model)
            source = Call.Source.SIP if rng.random() < 0.15 else Call.Source.WEBRTC
            if status == Call.Status.ACTIVE:
                # Still talking: started in the last minutes, so no limit is due yet.
                created = now - rng.randrange(5_000_000, 600_000_000)
            else:
                created = start + span * i // calls + rng.randrange(30_000_000)
            offer, answer = docs.pair()
            call_id = f"call_{rng.getrandbits(128):032x}"
            upstream_id = f"rtc_{rng.getrandbits(128):032x}"
            answered: int | None = created + rng.randrange(300_000, 900_000)
            ended: int | None = None
            closed: int | None = None
            retry_at: int | None = None
            attempts = 0
            duration: float | None = None
            error = ""
            n_upstream = 0
            if (model, voice, source) not in created_json:
                created_json[(model, voice, source)] = json.dumps({"model": model, "voice": voice, "source": source})
            events: list[tuple[str, str, str, int]] = [("call.created", "api", created_json[(model, voice, source)], created)]
            tail: list[tuple[str, str, str, int]] = []
            if status == Call.Status.FAILED:
                answered, upstream_id, answer = None, "", ""
                ended = created + rng.randrange(200_000, 3_000_000)
                reason, error = Call.EndReason.UPSTREAM_ERROR, "OpenAI answered 500 Internal Server Error."
                events.append(("call.failed", "upstream", failed_json, ended))
            else:
                if status == Call.Status.ACTIVE:
                    reason = ""
                    n_upstream = rng.randint(1, 8)
                elif reason == Call.EndReason.SETUP_TIMEOUT:
                    # Never answered: no upstream call, no answer, no sideband.
                    answered, upstream_id, answer = None, "", ""
                    duration = setup_timeout
                else:
                    duration = float(limit) if reason == Call.EndReason.MAX_DURATION else min(rng.lognormvariate(5.0, 0.9), limit - 1.0)
                    n_upstream = whole + (1 if rng.random() < fraction else 0)
                if answered is not None:
                    events.append(("call.answered", "upstream", f'{{"upstream_id": "{upstream_id}"}}', answered))
                if duration is not None:
                    ended = created + int(duration * 1_000_000)
                    tail.append(("call.ended", "system", f'{{"reason": "{reason}", "duration_seconds": {round(duration)}}}', ended))
                    if upstream_id:
                        if rng.random() < 0.0005:
                            # A hangup OpenAI has not confirmed yet: retried later by the sweeper.
                            attempts, retry_at = 3, now + rng.randrange(60_000_000, 300_000_000)
                        else:
                            closed = ended + rng.randrange(50_000, 400_000)
                            tail.append(("upstream.hangup", "system", f'{{"upstream_id": "{upstream_id}", "already_gone": false}}', closed))
            metrics, p95, slowest = "{}", None, None
            if n_upstream >= len(TURN):
                # Measured turns (speech stopped to first answer audio): most under a second, a few slow.
                turns = n_upstream // len(TURN)
                typical = rng.lognormvariate(6.4, 0.35)
                latencies = [typical * rng.lognormvariate(0.0, 0.4) for _ in range(turns)]
                p50, p95 = round(quality.percentile(latencies, 0.5)), round(quality.percentile(latencies, 0.95))
                slowest = round(max(latencies))
                histogram = quality.latency_histogram(latencies)
                metrics = json.dumps(
                    {
                        "turns": turns,
                        "latency_ms": {"p50": p50, "p95": p95, "max": slowest},
                        "interruptions": turns // 4,
                        "latency_histogram": histogram,
                    }
                )
                turn_hours[(created - created % 3_600_000_000, upstream_model)].update(histogram)
            upstream_rows, usage, cost, transcript = conversations.get(n_upstream, upstream_model) if n_upstream else ([], {}, None, False)
            if cost is None and pricing.prices_for(upstream_model) is not None:
                cost = Decimal("0.000000")
            pk = call_pk
            call_pk += 1
            first = answered or created
            last = ended or now
            step = (last - first) // (len(upstream_rows) + 1)
            for j, (kind, data) in enumerate(upstream_rows):
                event_rows.append((event_pk, pk, kind, at(first + step * (j + 1)), data, "upstream", f"event_{pk:x}_{j:03d}"))
                event_pk += 1
            for kind, actor, data, when in events + tail:
                event_rows.append((event_pk, pk, kind, at(when), data, actor, ""))
                event_pk += 1
            n_events = len(upstream_rows) + len(events) + len(tail)
            tokens_in, tokens_out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
            if (model, voice) not in sessions:
                requested = {"model": model, "voice": voice, "instructions": INSTRUCTIONS, "modalities": ["audio", "text"]}
                sent = {
                    **session_upstream_base,
                    "model": upstream_model,
                    "audio": {**session_upstream_base["audio"], "output": {"voice": voice}},
                }
                sessions[(model, voice)] = (json.dumps(requested), json.dumps(sent))
            session_requested, session_upstream = sessions[(model, voice)]
            call_rows.append(
                (
                    pk,
                    call_id,
                    upstream_id,
                    source,
                    status,
                    model,
                    voice,
                    '["audio", "text"]',
                    INSTRUCTIONS,
                    0.8,
                    None,
                    session_requested,
                    upstream_model,
                    session_upstream,
                    api_key_id,
                    offer,
                    answer,
                    at(created),
                    at(answered),
                    at(ended),
                    duration,
                    at(closed),
                    attempts,
                    at(retry_at),
                    limit,
                    at(last if status == Call.Status.ACTIVE else (ended if n_upstream else None)),
                    # When it reaches its maximum duration (set by the answer, as services do).
                    at(answered + limit * 1_000_000 if answered is not None else None),
                    reason,
                    error,
                    json.dumps(usage) if usage else "{}",
                    tokens_in,
                    tokens_out,
                    None if cost is None else str(cost),
                    transcript,
                    "",
                    None,
                    # Phone calls: a French caller number and the support line's.
                    f"+336{pk % 100_000_000:08d}" if source == "sip" else "",
                    "+33180000000" if source == "sip" else "",
                    "[]",
                    "",
                    metrics,
                    p95,
                    slowest,
                )
            )
            ended_with_duration = status == Call.Status.ENDED and duration is not None
            group = groups[(api_key_id, status, reason, model, voice, source, upstream_model)]
            group[0] += 1
            if ended_with_duration and duration is not None:
                group[1] += 1
                group[2] += duration
            group[3] += tokens_in
            group[4] += tokens_out
            group[5] += counters.micros(cost)
            hour_group = hour_groups[
                (
                    created - created % 3_600_000_000,
                    upstream_model,
                    status,
                    reason,
                    counters.duration_bucket(duration) if ended_with_duration and duration is not None else "",
                )
            ]
            hour_group[0] += 1
            hour_group[1] += answered is not None
            hour_group[2] += duration if ended_with_duration and duration is not None else 0.0
            hour_group[3] += tokens_in
            hour_group[4] += tokens_out
            hour_group[5] += counters.micros(cost)
            events_by_key[api_key_id] += n_events
            by_status[status] += 1
            offer_bytes += len(offer)
            answer_bytes += len(answer)
        writer.put([(Call._meta.db_table, CALL_COLUMNS, call_rows), (CallEvent._meta.db_table, EVENT_COLUMNS, event_rows)])
        done += size
        if done % (chunk * 10) == 0 or done == calls:
            print(f"  {done:>9,} calls, {event_pk - 1:>11,} events  {time.monotonic() - began:7.1f} s", flush=True)
    writer.close()
    rows = counters.fold(
        (counters.Group(*key, calls=int(g[0]), duration_calls=int(g[1]), duration_seconds=g[2], input_tokens=int(g[3]),
                        output_tokens=int(g[4]), cost_micros=int(g[5])) for key, g in groups.items()),
        events_by_key,
    )  # fmt: skip
    hours = counters.fold_hours(
        counters.HourGroup(datetime.fromtimestamp(key[0] / 1_000_000, UTC), *key[1:], calls=int(g[0]), answered=int(g[1]),
                           duration_seconds=g[2], input_tokens=int(g[3]), output_tokens=int(g[4]), cost_micros=int(g[5]))
        for key, g in hour_groups.items()
    )  # fmt: skip
    counters.fold_turns(
        ((datetime.fromtimestamp(key[0] / 1_000_000, UTC), key[1], dict(histogram)) for key, histogram in turn_hours.items()), hours
    )
    with transaction.atomic():
        counters.add_rows(rows)
        counters.add_bucket_rows(hours)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                for model in (Call, CallEvent):
                    table = model._meta.db_table
                    cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    if sqlite:
        with connection.cursor() as cursor, contextlib.suppress(OperationalError):
            cursor.execute(f"PRAGMA journal_mode={journal}")
    else:
        with connection.cursor() as cursor:
            # What autovacuum would do after such a load; the planner needs it.
            cursor.execute("ANALYZE")
    return {
        "calls": done,
        "events": sum(events_by_key.values()),
        "by_status": by_status,
        "offer_bytes": offer_bytes,
        "answer_bytes": answer_bytes,
        "counter_rows": len(rows),
        "hour_rows": len(hours),
        "seconds": time.monotonic() - began,
        "writing": writer.seconds,
        "api_keys": len(api_keys),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--events-per-call", type=float, default=10.0)
    parser.add_argument("--chunk", type=int, default=10_000, help="calls per transaction")
    parser.add_argument("--api-keys", type=int, default=5)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--active", type=float, default=1.0, help="percent of the calls still active (at most 96)")
    parser.add_argument("--quick", action="store_true", help="2,000 calls, and --check (for the test suite)")
    parser.add_argument("--check", action="store_true", help="recount every figure afterwards and compare with the counters")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.chunk, args.check = min(args.calls, 2000), 500, True
    print(
        f"Seeding {args.calls:,} calls (~{args.events_per_call:g} events each) into {connection.vendor} {connection.settings_dict['NAME']}"
    )
    written = seed(
        calls=args.calls,
        events_per_call=args.events_per_call,
        chunk=args.chunk,
        seed_value=args.seed,
        keys=args.api_keys,
        active=args.active,
    )
    by_status = ", ".join(f"{status} {n:,}" for status, n in sorted(written["by_status"].items()))
    print(
        f"Wrote {written['calls']:,} calls ({by_status}), {written['events']:,} events, {written['api_keys']} API keys, "
        f"{written['counter_rows']} counter rows, {written['hour_rows']:,} hourly counter rows in {written['seconds']:.1f} s ({written['writing']:.1f} s in the database) "
        f"({written['calls'] / written['seconds']:,.0f} calls/s, {written['events'] / written['seconds']:,.0f} events/s); "
        f"offers {written['offer_bytes'] / max(written['calls'], 1) / 1024:.1f} KiB, "
        f"answers {written['answer_bytes'] / max(written['calls'], 1) / 1024:.1f} KiB on average"
    )
    if args.check:
        from realtime import selectors

        recounted, counted = selectors.stats_recount(), selectors.stats()
        if recounted != counted:
            print(f"MISMATCH\n  counters: {counted}\n  recount:  {recounted}")
            sys.exit(1)

        def rounded(rows: dict[Any, dict[str, float]]) -> dict[Any, dict[str, float]]:
            return {key: {**amounts, "duration_seconds": round(amounts["duration_seconds"], 3)} for key, amounts in rows.items()}

        if rounded(counters.stored_hours()) != rounded(counters.recount_hours()):
            print("MISMATCH in the hourly counters")
            sys.exit(1)
        print(f"Checked: counters equal a recount ({counted['total_calls']:,} calls, {counted['total_events']:,} events).")


if __name__ == "__main__":
    main()
