"""Broker CPU per create and the overhead over a direct SDK call, the product beside a variant of it.

    python bench/create_variants.py --variant sdk-httpx [--database postgres://…/name] [--rounds 3] [--cycles 60]
    python bench/create_variants.py --variant unprepared --database postgres://…/name
    python bench/create_variants.py --quick          # the suite runs it

Two brokers side by side, as `bench/scale.py` runs them (`manage.py serve`, DEBUG off, an API key
on every request, no monitors, each in front of an engine of its own): the product, and the
product with `--variant`'s parts swapped for what they replaced (bench/_variant_server.py:
`sdk-httpx`, the OpenAI SDK over httpx's own transport; `unprepared`, a transition's statement
bound on the client and planned at every run). Each round measures both, one after the other,
so they share the machine's load: broker CPU per create and per create + `DELETE` (a subscriber
on the list feed), then the median create latency beside a direct `openai` SDK call to the same
engine. Without `--database`, each broker has a fresh SQLite file; with a PostgreSQL URL, both use
that database (migrated first), each with an API key of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import engine, machine, production_env, server, speed_ms, speed_note  # noqa: E402
from bench.create_concurrency import make_offer  # noqa: E402
from bench.scale import NO_PURGE, Broker, cycles, latencies  # noqa: E402

LABELS = ("broker CPU per create (ms)", "broker CPU per create + DELETE (ms)", "overhead p50 (ms)", "create p50, direct SDK call (ms)")


@contextmanager
def broker(database: Path | str, variant: str) -> Iterator[Broker]:
    # The broker's per-key request rate would refuse a long run's cycles (600 a minute).
    quiet = {"REALTIME_MONITORS": "off", "LOCALREALTIME_CONNECT_TIMEOUT": "5", "REALTIME_THROTTLE_API_KEY": "", **NO_PURGE}
    with ExitStack() as stack:
        pids: list[int] = []
        engine_v1 = stack.enter_context(engine(quiet))
        env = {**quiet, **production_env(engine_v1), **({"BENCH_VARIANT": variant} if variant else {})}
        # Migrated, and an API key of its own made for it (`manage.py create_api_key`).
        served = stack.enter_context(server(env, database=database, on_start=lambda p: pids.append(p.pid)))
        yield Broker(served.url, served.headers, pids[0], engine_v1.removesuffix("/v1"), {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="sdk-httpx", help="bench/_variant_server.py's parts to swap (comma-separated)")
    parser.add_argument("--database", help="a PostgreSQL URL both brokers use (default: a fresh SQLite file each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=60, help="create + DELETE cycles per round and broker")
    parser.add_argument("--quick", action="store_true", help="one round of 3 cycles (for the test suite)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.cycles = 1, 3
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
    os.environ.setdefault("DEBUG", "true")
    offer = asyncio.run(make_offer())
    load, speeds = os.getloadavg(), [speed_ms()]
    print(f"machine: {machine()}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; speed probe {speeds[0]:.0f} ms")
    names = {"product": "", args.variant: args.variant}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        brokers = {
            name: stack.enter_context(broker(args.database or Path(tmp) / f"{name}.sqlite3", variant)) for name, variant in names.items()
        }
        for _ in range(args.rounds):
            for name, b in brokers.items():
                measured = asyncio.run(cycles(b.url, offer, b.pid, args.cycles, b.headers))
                measured |= asyncio.run(latencies(b.url, b.engine_url, offer, args.cycles, b.headers))
                rounds[name].append(measured)
                shown = ", ".join(f"{label.removesuffix(' (ms)')} {measured[label]:.2f}" for label in LABELS)
                speeds.append(speed_ms())
                print(
                    f"round {len(rounds[name])}, {name}: {shown} ms; load {os.getloadavg()[0]:.1f}; speed probe {speeds[-1]:.0f} ms",
                    flush=True,
                )
    print(speed_note(speeds))
    print(f"{'median of the rounds':40s} {'product':>10s} {args.variant:>14s}")
    for label in LABELS:
        product, variant = (statistics.median(r[label] for r in rounds[name]) for name in names)
        print(f"{label:40s} {product:10.2f} {variant:14.2f}")


if __name__ == "__main__":
    main()
