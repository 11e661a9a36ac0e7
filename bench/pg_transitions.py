"""PostgreSQL's time and CPU for a call's four transitions, their statement prepared or not.

    python bench/pg_transitions.py [--database postgres://…/name] [--cycles 200] [--rounds 3] [--quick]

Each cycle runs what a created and ended call runs on the database, through `realtime.services`
(nothing sent upstream): `call_open` (the call, its event, the counters, in one statement),
`call_answer`, `call_end` and `call_note_upstream_closed`. Rounds alternate between the product's
way, the transition's statement prepared on the connection (`realtime.statements._prepared_cursor`),
and Django's own cursor (parameters bound on the client, planned at every run), so both see the
same machine load. Per round: the median time of the open and of the answer (a create's two
trips), this process's CPU and the PostgreSQL backend's CPU per call (from /proc, when readable).

Without `--database`, a PostgreSQL of its own is started as `make run-scaled` starts it
(`deploy/servers.py`, durable settings) in a temporary folder and migrated (docs/benchmarks.md,
"A transition's statement, prepared").
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
os.environ.setdefault("DEBUG", "true")

from bench import pg_statements
from bench.pg_statements import run

WAYS = ("prepared", "unprepared")


def measure(url: str, cycles: int, rounds: int) -> dict[str, list[dict[str, float | None]]]:
    os.environ["DATABASE_URL"] = url
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from bench.create_concurrency import make_offer
    from realtime import services, statements, upstream
    from realtime.models import Call, CallEvent
    from realtime.sessions import parse_session

    # As in production: no statement log (DEBUG keeps one, at a cost of its own).
    settings.DEBUG = False
    prepared = statements._prepared_cursor
    offer = asyncio.run(make_offer())
    session = parse_session({})
    backend_cpu = pg_statements.backend_cpu()

    def own_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def run(way: str, n: int) -> dict[str, float | None]:
        statements._prepared_cursor = prepared if way == "prepared" else (lambda: connection.cursor())
        opens, answers = [], []
        cpu, backend = own_cpu(), backend_cpu()
        for _ in range(n):
            start = time.perf_counter()
            call = services.call_open(offer=offer, session=session, source=Call.Source.WEBRTC, actor=CallEvent.Actor.API)
            opened = time.perf_counter()
            created = upstream.CreatedCall(upstream_id=f"rtc_{os.urandom(12).hex()}", sdp_answer=offer)
            services.call_answer(call=call, created=created)
            answered = time.perf_counter()
            services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
            services.call_note_upstream_closed(call=call, hung_up=True)
            opens.append(opened - start)
            answers.append(answered - opened)
        after = backend_cpu()
        return {
            "open p50 ms": statistics.median(opens) * 1000,
            "answer p50 ms": statistics.median(answers) * 1000,
            "process CPU ms per call": (own_cpu() - cpu) / n * 1000,
            "backend CPU ms per call": None if backend is None or after is None else (after - backend) / n * 1000,
        }

    try:
        for way in WAYS:  # connection, caches, plans
            run(way, 20)
        figures: dict[str, list[dict[str, float | None]]] = {way: [] for way in WAYS}
        for _ in range(rounds):
            for way in WAYS:
                figures[way].append(run(way, cycles))
    finally:
        statements._prepared_cursor = prepared
    return figures


def main() -> None:
    args, figures = run(__doc__, measure, cycles=200, quick_cycles=30)
    print(f"{args.cycles} calls (open, answer, end, upstream closed) per round, {args.rounds} rounds per way, alternated")
    for way, rounds in figures.items():
        for name in rounds[0]:
            values: list[Any] = [r[name] for r in rounds]
            shown = "n/a" if None in values else "  ".join(f"{v:.2f}" for v in values)
            print(f"{way:10s} {name:24s} {shown}")


if __name__ == "__main__":
    main()
