"""PostgreSQL's work per call transition: the WAL, page images and time of a call's four writes.

    python bench/pg_statements.py [--database postgres://…/name] [--cycles 1000] [--rounds 3] [--quick]

Each cycle writes what a call created and ended writes to its row, one transaction each, through
the product's own statements (`realtime.statements.insert` and `update_if`, as `realtime.services`
runs them): the INSERT of a pending call (real-size offer, an API key), its answer, its end and the
upstream side's confirmed close. No event, counter or outbox row: what this measures is the call
table and its indexes (docs/benchmarks.md, "PostgreSQL: index entries per transition").

Each round starts with a `CHECKPOINT` (the first change to each page after one logs the whole
page) and prints, per cycle, the WAL records, full-page images and bytes (`pg_stat_wal`), the
backend's CPU time (from /proc when it can be read) and each statement's median time.

Without `--database`, a PostgreSQL of its own is started as `make run-scaled` starts it
(`deploy/servers.py`, durable settings) in a temporary folder and migrated; with one (migrated,
say a copy of a seeded history: `bench/seed_scale.py`), the calls are added to it, whatever its
migrations (so two copies of a history, before and after an index change, compare side by side).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
os.environ.setdefault("DEBUG", "true")

from deploy import servers

ROOT = Path(__file__).resolve().parent.parent
STATEMENTS = ("insert", "answer", "end", "closed", "commit")


def migrate(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "DATABASE_POOL": "false"}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)


@contextmanager
def postgres(database: str | None) -> Iterator[str]:
    """The URL of `database`, or of a PostgreSQL of its own, started as `make run-scaled` starts it
    (durable) in a temporary folder, migrated, and stopped afterwards."""
    if database:
        yield database
        return
    with tempfile.TemporaryDirectory(prefix="pg-bench-") as folder:
        servers._give_to_server_user(Path(folder))
        running = servers.start_postgres(Path(folder))
        try:
            migrate(running.url)
            yield running.url
        finally:
            running.stop()


def backend_cpu() -> Callable[[], float | None]:
    """A reader of the CPU time (seconds) of the PostgreSQL backend behind Django's connection;
    it reads None when the server runs elsewhere, or as a user whose processes are not readable."""
    from django.db import connection

    from bench._server import cpu_seconds

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def read() -> float | None:
        try:
            return cpu_seconds(backend)
        except OSError:
            return None

    return read


def measure(url: str, cycles: int, rounds: int) -> list[dict[str, Any]]:
    os.environ["DATABASE_URL"], os.environ["DATABASE_POOL"] = url, "false"
    import django

    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone

    from bench.seed_scale import Documents, real_offer
    from realtime import services, statements
    from realtime.models import ApiKey, Call

    documents = Documents(real_offer(), random.Random(11))
    key = ApiKey.objects.order_by("pk").first()
    if key is None:
        key = ApiKey(name="bench")
        services.api_key_create(key, by=services.SYSTEM)
    cpu = backend_cpu()

    def wal() -> tuple[int, int, int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")  # this backend's counts, now
        with connection.cursor() as cursor:
            cursor.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal")
            records, fpi, size = cursor.fetchone()
        return int(records), int(fpi), int(size)

    times: dict[str, list[float]] = {name: [] for name in STATEMENTS}

    def write(name: str, run: Any) -> Any:
        with transaction.atomic():
            start = time.perf_counter()
            result = run()
            times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
        times["commit"].append(time.perf_counter() - start)
        return result

    def cycle() -> None:
        now = timezone.now()
        offer, answer = documents.pair()
        call = Call(model="gpt-realtime", voice="marin", upstream_model="gpt-realtime", sdp_offer=offer, created_at=now, api_key=key)
        call.max_duration_seconds = 1800
        write("insert", lambda: statements.insert(call))
        upstream_id = f"rtc_{os.urandom(12).hex()}"
        answered = {
            "status": "active",
            "upstream_id": upstream_id,
            "sdp_answer": answer,
            "answered_at": now,
            "deadline_at": now + timedelta(minutes=30),
        }
        write("answer", lambda: statements.update_if(Call, call.pk, {"status": "pending"}, answered))
        ended = {"status": "ended", "ended_at": now, "end_reason": "api_hangup", "duration_seconds": 1.5}
        write("end", lambda: statements.update_if(Call, call.pk, {"status": "active"}, ended))
        write("closed", lambda: statements.update_if(Call, call.pk, {"upstream_closed_at": None}, {"upstream_closed_at": now}))

    for _ in range(20):  # connection, caches, plans
        cycle()
    figures = []
    for _ in range(rounds):
        for values in times.values():
            values.clear()
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
        wal_before, cpu_before, start = wal(), cpu(), time.perf_counter()
        for _ in range(cycles):
            cycle()
        elapsed, cpu_after, wal_after = time.perf_counter() - start, cpu(), wal()
        figures.append(
            {
                "ms per cycle": elapsed / cycles * 1000,
                "backend CPU ms per cycle": None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / cycles * 1000,
                "WAL records per cycle": (wal_after[0] - wal_before[0]) / cycles,
                "page images per cycle": (wal_after[1] - wal_before[1]) / cycles,
                "WAL kB per cycle": (wal_after[2] - wal_before[2]) / cycles / 1024,
                **{f"{name} median ms": statistics.median(values) * 1000 for name, values in times.items()},
            }
        )
    return figures


def run(doc: str | None, measure: Callable[[str, int, int], Any], *, cycles: int, quick_cycles: int) -> tuple[argparse.Namespace, Any]:
    """The PostgreSQL benches' command line (`--database`, `--cycles`, `--rounds`, `--quick`):
    `measure(url, cycles, rounds)` on the database it names, or on a server of its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="a migrated PostgreSQL database (URL); default: a server of its own")
    parser.add_argument("--cycles", type=int, default=cycles)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help=f"{quick_cycles} cycles, 1 round, on a server of its own (for the test suite)")
    args = parser.parse_args()
    if args.quick:
        args.cycles, args.rounds, args.database = quick_cycles, 1, None
    with postgres(args.database) as url:
        return args, measure(url, args.cycles, args.rounds)


def main() -> None:
    args, figures = run(__doc__, measure, cycles=1000, quick_cycles=100)
    print(f"{args.cycles} cycles (INSERT, answer, end, upstream closed) per round, {args.rounds} rounds, each after a CHECKPOINT")
    for name in figures[0]:
        values = [f[name] for f in figures]
        shown = "n/a" if None in values else "  ".join(f"{v:.3f}" for v in values)
        print(f"{name:28s} {shown}")


if __name__ == "__main__":
    main()
