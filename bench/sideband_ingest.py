"""Events persisted per second by one sideband monitor under a synthetic burst (SQLite, WAL).

A separate process plays OpenAI's sideband: on `GET /v1/realtime?call_id=...` it sends a
`session.created`, then as fast as the socket takes them a burst of complete conversation turns
shaped as the embedded engine sends them (speech, commit, items, transcription and transcript
deltas, response.done with usage, rate limits), then closes cleanly; asked again, it answers 404
(the call is over). This process runs the production `CallMonitor` against it, through the SDK,
into a fresh SQLite database: deltas are folded, events stored in batches, usage summed, and the
call finally ended as `remote_hangup`.

Measured: rows stored / seconds from the first event to the monitor's return (everything
committed). Usage: python bench/sideband_ingest.py [--turns 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import fresh_database_env  # noqa: E402


def _turn(n: int) -> list[dict[str, Any]]:
    """One user turn and its echoed response, in the engine's order (GA names)."""
    item, answer, response = f"item_u{n}", f"item_a{n}", f"resp_{n}"
    where = {"response_id": response, "item_id": answer, "output_index": 0, "content_index": 0}
    usage = {
        "total_tokens": 120,
        "input_tokens": 60,
        "output_tokens": 60,
        "input_token_details": {
            "text_tokens": 10,
            "audio_tokens": 50,
            "image_tokens": 0,
            "cached_tokens": 40,
            "cached_tokens_details": {"text_tokens": 10, "audio_tokens": 30, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": 10, "audio_tokens": 50},
    }
    user = {
        "id": item,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    said = "[echo] [1.20 s of speech]"
    reply = {
        "id": answer,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": said}],
    }
    events: list[dict[str, Any]] = [
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": n * 2000, "item_id": item},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": n * 2000 + 1200, "item_id": item},
        {"type": "input_audio_buffer.committed", "previous_item_id": None, "item_id": item},
        {"type": "conversation.item.added", "previous_item_id": None, "item": user},
        {"type": "conversation.item.done", "previous_item_id": None, "item": user},
        *(
            {"type": "conversation.item.input_audio_transcription.delta", "item_id": item, "content_index": 0, "delta": "x"}
            for _ in range(3)
        ),
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item,
            "content_index": 0,
            "transcript": "[1.20 s of speech]",
            "usage": {"type": "tokens", "input_tokens": 12, "output_tokens": 5, "total_tokens": 17},
        },
        {
            "type": "response.created",
            "response": {"object": "realtime.response", "id": response, "status": "in_progress", "output": [], "usage": None},
        },
        {"type": "response.output_item.added", "response_id": response, "output_index": 0, "item": reply},
        {"type": "conversation.item.added", "previous_item_id": item, "item": reply},
        {"type": "response.content_part.added", **where, "part": {"type": "audio", "transcript": ""}},
        {"type": "output_audio_buffer.started", "response_id": response},
        *({"type": "response.output_audio_transcript.delta", **where, "delta": said[i : i + 3]} for i in range(0, len(said), 3)),
        {"type": "response.output_audio_transcript.done", **where, "transcript": said},
        {"type": "response.content_part.done", **where, "part": {"type": "audio", "transcript": said}},
        {"type": "conversation.item.done", "previous_item_id": item, "item": reply},
        {"type": "response.output_item.done", "response_id": response, "output_index": 0, "item": reply},
        {
            "type": "response.done",
            "response": {"object": "realtime.response", "id": response, "status": "completed", "output": [reply], "usage": usage},
        },
        {"type": "output_audio_buffer.stopped", "response_id": response},
        {"type": "rate_limits.updated", "rate_limits": [{"name": "tokens", "limit": 400000, "remaining": 399880, "reset_seconds": 60.0}]},
    ]
    return events


def serve(port: int, turns: int, ready: Any) -> None:
    """The synthetic sideband (its own process): one burst per call id, then 404."""
    from websockets.asyncio.server import serve as ws_serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    messages = [json.dumps({"type": "session.created", "event_id": "event_s", "session": {"type": "realtime", "id": "sess_1"}})]
    count = 0
    for n in range(turns):
        for event in _turn(n):
            count += 1
            messages.append(json.dumps({**event, "event_id": f"event_{count:08d}"}))
    served: set[str] = set()

    def process_request(connection: Any, request: Any) -> Any:
        call_id = request.path.partition("call_id=")[2]
        if call_id in served:
            return Response(404, "Not Found", Headers(), b"")
        served.add(call_id)
        return None

    async def handler(connection: Any) -> None:
        for message in messages:
            await connection.send(message)
        await connection.close()

    async def main() -> None:
        async with ws_serve(handler, "127.0.0.1", port, process_request=process_request, compression=None, max_size=None):
            ready.set()
            await asyncio.Future()

    asyncio.run(main())


def measure(turns: int, runs: int) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fresh_database_env(
        OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", REALTIME_MONITORS="off", LOG_LEVEL="WARNING"
    )
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(port, turns, ready), daemon=True)
    server.start()
    ready.wait(30)

    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from realtime.models import Call, CallEvent
    from realtime.monitor import CallMonitor

    call_command("migrate", verbosity=0)
    sent = 1 + turns * len(_turn(0))
    rates = []
    try:
        for run in range(runs):
            call = Call.objects.create(
                status=Call.Status.ACTIVE,
                upstream_id=f"rtc_bench_{run}",
                model="gpt-realtime",
                voice="marin",
                upstream_model="gpt-realtime",
                sdp_offer="v=0",
                created_at=timezone.now(),
            )
            started = time.perf_counter()
            asyncio.run(CallMonitor(call).run())
            elapsed = time.perf_counter() - started
            stored = CallEvent.objects.filter(call=call).exclude(upstream_event_id="").count()
            call.refresh_from_db()
            assert call.status == Call.Status.ENDED and call.end_reason == Call.EndReason.REMOTE_HANGUP
            assert call.usage["responses"] == turns
            rates.append(stored / elapsed)
            received_rate = sent / elapsed
            print(f"run {run + 1}: {sent} events received, {stored} stored in {elapsed:.2f} s: ", end="")
            print(f"{stored / elapsed:,.0f} stored/s, {received_rate:,.0f} received/s")
    finally:
        server.terminate()
    print(f"median of {runs}: {statistics.median(rates):,.0f} events stored/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    measure(args.turns, args.runs)
