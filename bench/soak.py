"""Soak: a bounded churn of calls created and ended against the local engine.

Starts one server (the embedded default: API, engine, monitors and sweeper in one `manage.py serve`
process, a fresh SQLite file), then starts `--rate` calls a second for `--seconds`: each is created through
`POST /api/realtime/calls` (a real aiortc offer), held `--hold` seconds, and ended with `DELETE`.
Reports errors, p50/p99 latency of create and end, the server's memory (RSS after the warm-up vs at
the end), leaked calls (still live here, or still running in the engine), and whether
`GET /api/realtime/stats` agrees with the rows in the database.

Usage: python bench/soak.py [--rate 20] [--seconds 600] [--hold 1.0] [--warmup 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import machine, rss_kib, server
from bench.create_concurrency import make_offer, quantile


class Soak:
    def __init__(self, url: str, offer: str, args: argparse.Namespace) -> None:
        self.url, self.offer, self.args = url, offer, args
        self.create_ms: list[float] = []
        self.end_ms: list[float] = []
        self.errors: dict[str, int] = {}

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def one(self, http: httpx.AsyncClient, *, record: bool) -> None:
        try:
            start = time.perf_counter()
            created = await http.post("/api/realtime/calls", json={"sdp": self.offer, "session": {"voice": "alloy"}})
            took = (time.perf_counter() - start) * 1000
            if created.status_code != 201:
                self.error(f"create {created.status_code} {created.json().get('error', {}).get('code')}")
                return
            if record:
                self.create_ms.append(took)
            await asyncio.sleep(self.args.hold)
            start = time.perf_counter()
            ended = await http.delete(f"/api/realtime/calls/{created.json()['call_id']}")
            took = (time.perf_counter() - start) * 1000
            if ended.status_code != 200:
                self.error(f"end {ended.status_code}")
            elif record:
                self.end_ms.append(took)
        except httpx.HTTPError as exc:
            self.error(type(exc).__name__)

    async def churn(self, seconds: float, *, record: bool, sample: Callable[[], None] | None = None) -> int:
        """Start `rate` calls a second for `seconds`, on a fixed schedule; wait for all to end.

        `sample` is called every tenth of the run (the server's memory over time).
        """
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits) as http:
            total = int(seconds * self.args.rate)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            tasks = []
            for i in range(total):
                if sample is not None and i % max(total // 10, 1) == 0:
                    sample()
                delay = t0 + i / self.args.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(self.one(http, record=record)))
            await asyncio.gather(*tasks)
        return total


def rows(database: Path) -> dict[str, Any]:
    with sqlite3.connect(database) as db:
        counts = dict(db.execute("SELECT status, COUNT(*) FROM realtime_call GROUP BY status").fetchall())
        events = db.execute("SELECT COUNT(*) FROM realtime_callevent").fetchone()[0]
    return {"counts": counts, "events": events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="calls started per second")
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the measured churn")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds each call stays up")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of churn before measuring")
    parser.add_argument("--log", type=Path, help="keep the server's log here")
    parser.add_argument("--engine-history", type=int, default=100, help="ended calls the engine remembers (LOCALREALTIME_KEEP_ENDED)")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
    os.environ.setdefault("DEBUG", "true")
    offer = asyncio.run(make_offer())
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"churn: {args.rate:g} calls/s for {args.seconds:g} s, each held {args.hold:g} s (warm-up {args.warmup:g} s)")
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "soak.sqlite3"
        # The default concurrency limit (100) stays on: the churn must live within it. The engine
        # remembers few ended calls, so that its bounded history (filled during the warm-up)
        # does not pass for growth of the broker.
        env = {"REALTIME_MAX_ACTIVE_CALLS": "100", "LOCALREALTIME_KEEP_ENDED": str(args.engine_history)}
        with server(env, database=database, on_start=processes.append, keep_log=args.log) as served:
            url = served.url
            pid = processes[0].pid
            soak = Soak(url, offer, args)
            asyncio.run(soak.churn(args.warmup, record=False))
            rss_start, started = rss_kib(pid), time.monotonic()
            samples: list[int] = []
            calls = asyncio.run(soak.churn(args.seconds, record=True, sample=lambda: samples.append(rss_kib(pid))))
            elapsed, rss_end = time.monotonic() - started, rss_kib(pid)
            time.sleep(1.0)  # monitors and the last hangups settle
            stats = httpx.get(f"{url}/api/realtime/stats", timeout=10).json()["stats"]
            engine = httpx.get(f"{served.engine_url}/_local/stats", headers={"Authorization": "Bearer sk-localrealtime"}, timeout=10).json()
            found = rows(database)
    live = found["counts"].get("pending", 0) + found["counts"].get("active", 0)
    total_rows = sum(found["counts"].values())
    agrees = (
        stats["total_calls"] == total_rows
        and stats["active_calls"] == found["counts"].get("active", 0)
        and stats["ended_calls"] == found["counts"].get("ended", 0)
        and stats["total_events"] == found["events"]
    )
    print(f"calls: {calls} in {elapsed:.0f} s ({calls / elapsed:.1f}/s achieved); errors: {sum(soak.errors.values())} {soak.errors or ''}")
    print(f"create: p50 {quantile(soak.create_ms, 0.5):.0f} ms, p99 {quantile(soak.create_ms, 0.99):.0f} ms")
    print(f"end:    p50 {quantile(soak.end_ms, 0.5):.0f} ms, p99 {quantile(soak.end_ms, 0.99):.0f} ms")
    print(
        f"server RSS: {rss_start / 1024:.0f} MiB after warm-up, {rss_end / 1024:.0f} MiB at the end ({(rss_end / rss_start - 1) * 100:+.1f}%)"
    )
    print(f"server RSS over the run (MiB): {' '.join(str(round(kib / 1024)) for kib in [*samples, rss_end])}")
    print(f"leaks: {live} calls still live here, {engine['live_calls']} still running in the engine")
    print(
        f"stats vs rows: {'agree' if agrees else 'DISAGREE'} (stats {stats['total_calls']} calls, {stats['total_events']} events; rows {found})"
    )


if __name__ == "__main__":
    main()
