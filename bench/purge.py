"""Retention purge in the background while live requests run: p99 of live requests with and without it.

    python bench/purge.py [--calls 100000] [--seconds 20] [--runs 3] [--quick]
    python bench/purge.py --database big.sqlite3 [--seconds 20] [--runs 3]

Seeds a migrated SQLite database with a call history (`bench/seed_scale.py`: ended calls with
their SDPs, sessions and sideband events), then for each run starts the real server twice on it
(which first, alternating from run to run; each window after an unmeasured warm-up):
- baseline: retention off (every kind kept forever);
- purge: every kind but whole calls due at once (0 days), the background purge running from the
  server's start (`realtime.background.run`), with the default batch size and pause;
and in each, clients create a WebRTC call (answered by the local engine), read it and end it, over
and over for `--seconds`, recording every request's latency. A run whose purge finished before the
window closed says so (then the window is not all under purge).

With `--database`, the runs share one history seeded beforehand (`bench/seed_scale.py`, a million
calls takes a quarter of an hour): a window purges a few hundred calls of the backlog, so each run
meets practically the same history, and the same history is what the batch's cost must not depend on. Prints both p99s and their ratio
(goal: purge p99 at most 1.2 × baseline; docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import ROOT, machine, server

KINDS = ("SDP", "SESSION", "TRANSCRIPTS", "CALLER_NUMBERS", "EVENTS")
KEEP = {f"REALTIME_RETAIN_{kind}_DAYS": "" for kind in (*KINDS, "CALLS")}
PURGE = {**KEEP, **{f"REALTIME_RETAIN_{kind}_DAYS": "0" for kind in KINDS}}


def seed(db: Path, calls: int) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "DEBUG": "true", "SECRET_KEY": "bench-only", "OPENAI_API_KEY": ""}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([sys.executable, "bench/seed_scale.py", "--calls", str(calls), "--chunk", "5000"], cwd=ROOT, env=env, check=True)


def purged(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
        return connection.execute("SELECT COUNT(*) FROM realtime_call WHERE events_purged_at IS NOT NULL").fetchone()[0]


def due(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
        return connection.execute("SELECT COUNT(*) FROM realtime_call WHERE ended_at IS NOT NULL AND events_purged_at IS NULL").fetchone()[
            0
        ]


async def live(url: str, offer: str, seconds: float, clients: int) -> list[float]:
    """Create, read and end calls from `clients` loops for `seconds`; every request's latency (ms)."""
    latencies: list[float] = []

    async def timed(request: asyncio.Future[httpx.Response] | object) -> httpx.Response:
        started = time.perf_counter()
        response = await request  # type: ignore[misc]
        latencies.append((time.perf_counter() - started) * 1000)
        return response

    async def loop(http: httpx.AsyncClient, until: float) -> None:
        while time.monotonic() < until:
            created = await timed(http.post("/api/realtime/calls", json={"sdp": offer}))
            if created.status_code != 201:
                raise RuntimeError(f"create: {created.status_code} {created.text[:300]}")
            call_id = created.json()["call_id"]
            await timed(http.get(f"/api/realtime/calls/{call_id}"))
            await timed(http.get("/api/realtime/calls", params={"limit": 20}))
            await timed(http.delete(f"/api/realtime/calls/{call_id}"))

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        until = time.monotonic() + seconds
        await asyncio.gather(*(loop(http, until) for _ in range(clients)))
    return latencies


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def run_phase(db: Path, env: dict[str, str], offer: str, seconds: float, clients: int) -> tuple[float, int, int, bool]:
    """p99 (ms), requests, calls purged during the window, and whether the purge was still due at its end."""
    with server({**env, "LOG_LEVEL": "WARNING"}, database=db) as served:
        # Not measured: the server's first requests (cold caches, the seeded live calls reconciled).
        asyncio.run(live(served.url, offer, min(seconds / 4, 5.0), clients))
        before = purged(db)
        latencies = asyncio.run(live(served.url, offer, seconds, clients))
        after = purged(db)
        still_due = due(db) > 0
    return p99(latencies), len(latencies), after - before, still_due


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--database", type=Path, help="an already seeded SQLite history to use for every run (kept)")
    parser.add_argument("--quick", action="store_true", help="2,000 calls, 3 s windows, 1 run (the test suite runs it)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.seconds, args.runs = 2000, 3.0, 1
    from localrealtime.caller import sample_offer

    offer = asyncio.run(sample_offer())
    print(f"{machine()}; load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    if args.database:
        args.calls = due(args.database)
    print(f"{args.calls:,} expired calls, {args.clients} clients, {args.seconds:g} s per window, {args.runs} runs")
    print("run  baseline_p99_ms  purge_p99_ms  ratio  requests  calls_purged_in_window  purge_still_running")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, args.runs + 1):
            db = args.database or Path(tmp) / f"purge-{run}.sqlite3"
            if not args.database:
                seed(db, args.calls)
            # Alternate which phase comes first, so neither always meets a fresher database.
            if run % 2:
                base, base_n, _, _ = run_phase(db, KEEP, offer, args.seconds, args.clients)
                under, under_n, during, running = run_phase(db, PURGE, offer, args.seconds, args.clients)
            else:
                under, under_n, during, running = run_phase(db, PURGE, offer, args.seconds, args.clients)
                base, base_n, _, _ = run_phase(db, KEEP, offer, args.seconds, args.clients)
            ratios.append(under / base)
            print(f"{run}  {base:.1f}  {under:.1f}  {under / base:.2f}  {base_n}+{under_n}  {during}  {'yes' if running else 'no'}")
            if not args.database:
                db.unlink()
    print(f"median ratio {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
