"""200 concurrent POST /api/realtime/calls against an upstream that answers each in 500 ms.

Call setup waits on OpenAI without holding a thread, so the total should stay close to one
upstream round trip rather than 200 / threads of them. Two layouts are measured:

- embedded: the default `make run` process, serving the API and the local engine together;
- separate: the engine in a second process, as OpenAI is another host in production.

Usage: python bench/create_concurrency.py [--calls 200] [--delay-ms 500] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import engine, machine, server


async def make_offer() -> str:
    import django

    django.setup()
    from localrealtime.caller import sample_offer

    return await sample_offer()


async def burst(url: str, offer: str, calls: int) -> tuple[float, list[float], list[int]]:
    limits = httpx.Limits(max_connections=calls, max_keepalive_connections=calls)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        created: list[str] = []

        async def one() -> tuple[float, int]:
            start = time.perf_counter()
            try:
                response = await http.post("/api/realtime/calls", json={"sdp": offer, "session": {"voice": "alloy"}})
            except httpx.HTTPError as exc:
                print(f"    transport error: {type(exc).__name__}: {exc}")
                return time.perf_counter() - start, 0
            if response.status_code == 201:
                created.append(response.json()["call_id"])
            return time.perf_counter() - start, response.status_code

        start = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(calls)))
        total = time.perf_counter() - start
        # Hang up the calls this burst made (only those: the database may hold live calls of its
        # own, a seeded history's), so the next run starts from an idle engine.
        for i in range(0, len(created), 100):
            await asyncio.gather(*(http.delete(f"/api/realtime/calls/{call_id}") for call_id in created[i : i + 100]))
    return total, [r[0] for r in results], [r[1] for r in results]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(label: str, url: str, offer: str, args: argparse.Namespace) -> None:
    asyncio.run(burst(url, offer, 10))  # warm-up: imports, connection pools, first peers
    totals, p50s, p99s = [], [], []
    for _ in range(args.runs):
        total, latencies, statuses = asyncio.run(burst(url, offer, args.calls))
        errors = sum(1 for s in statuses if s != 201)
        totals.append(total)
        p50s.append(quantile(latencies, 0.5))
        p99s.append(quantile(latencies, 0.99))
        print(
            f"  {label}: {args.calls} creates in {total:.2f} s (p50 {p50s[-1] * 1000:.0f} ms, p99 {p99s[-1] * 1000:.0f} ms, errors {errors})"
        )
    print(
        f"{label}: median of {args.runs} runs: total {statistics.median(totals):.2f} s, "
        f"p50 {statistics.median(p50s) * 1000:.0f} ms, p99 {statistics.median(p99s) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--delay-ms", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
    os.environ.setdefault("DEBUG", "true")
    offer = asyncio.run(make_offer())
    print(f"machine: {machine()}; upstream answer delay {args.delay_ms} ms")
    delay = {"LOCALREALTIME_ANSWER_DELAY_MS": str(args.delay_ms), "LOCALREALTIME_CONNECT_TIMEOUT": "5"}
    with server(delay) as served:
        measure("embedded", served.url, offer, args)
    with engine(delay) as engine_url, server({"LOCALREALTIME_ENABLED": "false", "OPENAI_BASE_URL": engine_url}) as served:
        measure("separate", served.url, offer, args)


if __name__ == "__main__":
    main()
