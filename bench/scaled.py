"""The goals of the scaled topology, measured on it (`make run-scaled`'s Procfile under honcho:
nginx, two web processes, a worker, PostgreSQL, Redis, the local engine as its own process).

Scenarios (each measures its baseline in the same run, before the load):
- burst:   N concurrent creates through nginx, upstream answering after --delay-ms; total time, p50/p99
- churn:   create, hold 1 s, end, at --rate calls/s for --seconds; 5xx, leaked calls, p99, memory
- body:    a 300 MiB anonymous body through nginx; web processes' memory, other requests' latency
- slow:    --slow connections trickling header bytes (one per --trickle s); other clients' latency
- fanout:  --subscribers WebSocket feeds through nginx (spread over the two web processes); the
           delay from a DELETE to each subscriber's call.ended push, p50/p99

    .venv/bin/python bench/scaled.py --scenarios burst --delay-ms 500 --runs 5
    .venv/bin/python bench/scaled.py --scenarios churn --rate 50 --seconds 60 --delay-ms 0
    .venv/bin/python bench/scaled.py --quick          # every scenario, small (tests/test_bench_scaled.py)

Clients run in this process on the same 2 cores as the servers: the figures include their work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.typing import Origin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy import scaled, servers  # noqa: E402


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def web_rss(topology: scaled.Topology) -> dict[str, float]:
    pids = topology.groups[0].pids()
    return {name: round(rss_mib(pids[name]), 1) for name in ("web1", "web2")}


async def make_offer() -> str:
    from localrealtime.caller import sample_offer

    return await sample_offer()


async def probe(url: str, seconds: float, every: float = 0.2) -> dict[str, Any]:
    """Other clients: a GET of the stats every `every` s for `seconds`; latencies and failures."""
    latencies: list[float] = []
    failures = 0
    async with httpx.AsyncClient(timeout=10) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                ok = (await client.get(f"{url}/api/realtime/stats")).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append((time.monotonic() - started) * 1000)
            else:
                failures += 1
            await asyncio.sleep(every)
    return {
        "answered": len(latencies),
        "failed": failures,
        "p50_ms": round(pct(latencies, 0.5), 1),
        "p99_ms": round(pct(latencies, 0.99), 1),
    }


async def end_all(url: str, call_ids: list[str]) -> None:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=20)) as client:
        await asyncio.gather(*(client.delete(f"{url}/api/realtime/calls/{call_id}") for call_id in call_ids))


async def live_calls(url: str) -> int:
    async with httpx.AsyncClient(timeout=30) as client:
        total = 0
        for status in ("pending", "active"):
            total += len((await client.get(f"{url}/api/realtime/calls", params={"status": status, "limit": 100})).json()["data"])
        return total


# --- scenarios ---------------------------------------------------------------------------------


async def burst(topology: scaled.Topology, offer: str, args: argparse.Namespace) -> dict[str, Any]:
    async def once(n: int) -> tuple[float, list[float], list[int], list[str]]:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as client:

            async def one() -> tuple[float, int, str]:
                started = time.monotonic()
                response = await client.post(f"{topology.url}/api/realtime/calls", json={"sdp": offer})
                call_id = response.json().get("call_id", "") if response.status_code == 201 else ""
                return time.monotonic() - started, response.status_code, call_id

            started = time.monotonic()
            results = await asyncio.gather(*(one() for _ in range(n)))
            total = time.monotonic() - started
        await end_all(topology.url, [c for _, _, c in results if c])
        return total, [r[0] for r in results], [r[1] for r in results], [c for _, _, c in results if c]

    baseline = [await once(1) for _ in range(3)]
    runs: list[dict[str, Any]] = []
    totals: list[float] = []
    for _ in range(args.runs):
        total, latencies, statuses, _created = await once(args.calls)
        totals.append(total)
        runs.append(
            {
                "total_s": round(total, 2),
                "p50_s": round(pct(latencies, 0.5), 2),
                "p99_s": round(pct(latencies, 0.99), 2),
                "statuses": dict(sorted({s: statuses.count(s) for s in set(statuses)}.items())),
            }
        )
        await asyncio.sleep(2)
    return {
        "calls": args.calls,
        "delay_ms": args.delay_ms,
        "baseline_one_create_s": round(statistics.median(b[0] for b in baseline), 3),
        "median_total_s": round(statistics.median(totals), 2),
        "runs": runs,
    }


async def churn(topology: scaled.Topology, offer: str, args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: list[int] = []
    errors: list[str] = []
    rss_before = web_rss(topology)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1000)) as client:

        async def one() -> None:
            started = time.monotonic()
            try:
                response = await client.post(f"{topology.url}/api/realtime/calls", json={"sdp": offer})
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                return
            latencies.append(time.monotonic() - started)
            statuses.append(response.status_code)
            if response.status_code == 201:
                await asyncio.sleep(1.0)
                try:
                    ended = await client.delete(f"{topology.url}/api/realtime/calls/{response.json()['call_id']}")
                    statuses.append(ended.status_code)
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)

        tasks = []
        started = time.monotonic()
        for i in range(int(args.rate * args.seconds)):
            await asyncio.sleep(max(0.0, started + i / args.rate - time.monotonic()))
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
    await asyncio.sleep(3)
    return {
        "rate": args.rate,
        "seconds": args.seconds,
        "achieved_rate": round(len(tasks) / elapsed, 1),
        "creates": len(latencies),
        "5xx": sum(1 for s in statuses if s >= 500),
        "statuses": dict(sorted({s: statuses.count(s) for s in set(statuses)}.items())),
        "transport_errors": len(errors),
        "p50_create_s": round(pct(latencies, 0.5), 3),
        "p99_create_s": round(pct(latencies, 0.99), 3),
        "leaked_calls": await live_calls(topology.url),
        "web_rss_mib_before": rss_before,
        "web_rss_mib_after": web_rss(topology),
    }


async def body(topology: scaled.Topology, offer: str, args: argparse.Namespace) -> dict[str, Any]:
    baseline = await probe(topology.url, 3)
    rss_before = web_rss(topology)

    async def chunks() -> Any:
        chunk = b"x" * (1024 * 1024)
        for _ in range(args.body_mib):
            yield chunk

    async def send() -> tuple[int, float]:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=120) as client:
            response = await client.post(
                f"{topology.url}/api/realtime/calls", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"}
            )
        return response.status_code, time.monotonic() - started

    during, (status, took) = await asyncio.gather(probe(topology.url, 3), send())
    return {
        "body_mib": args.body_mib,
        "status": status,
        "refused_after_s": round(took, 3),
        "web_rss_mib_before": rss_before,
        "web_rss_mib_after": web_rss(topology),
        "others_before": baseline,
        "others_during": during,
    }


async def slow(topology: scaled.Topology, offer: str, args: argparse.Namespace) -> dict[str, Any]:
    baseline = await probe(topology.url, 3)
    port = topology.ports.public
    stop = asyncio.Event()
    opened = closed_by_server = 0

    async def trickler() -> None:
        nonlocal opened, closed_by_server
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            opened += 1
            try:
                for byte in b"GET /api/realtime/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    try:
                        if await asyncio.wait_for(reader.read(1), timeout=args.trickle) == b"":
                            closed_by_server += 1
                            break
                    except TimeoutError:
                        pass
                    if stop.is_set():
                        break
            except OSError:
                closed_by_server += 1
            finally:
                writer.close()

    tasks = [asyncio.ensure_future(trickler()) for _ in range(args.slow)]
    await asyncio.sleep(2)  # all connected
    during = await probe(topology.url, args.seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "connections": args.slow,
        "trickle_s": args.trickle,
        "opened": opened,
        "closed_by_nginx": closed_by_server,
        "others_before": baseline,
        "others_during": during,
    }


async def fanout(topology: scaled.Topology, offer: str, args: argparse.Namespace) -> dict[str, Any]:
    ws_url = topology.url.replace("http://", "ws://") + "/ws/realtime/calls"
    sockets: list[Any] = []

    async def connect(count: int) -> None:
        for i in range(0, count, 100):
            sockets.extend(
                await asyncio.gather(
                    *(
                        websockets.connect(ws_url, origin=Origin(topology.url), open_timeout=60, max_queue=None)
                        for _ in range(min(100, count - i))
                    )
                )
            )

    async def heard(sock: Any, call_id: str, event_type: str) -> float:
        while True:
            message = json.loads(await asyncio.wait_for(sock.recv(), timeout=60))
            if message["type"] == "call.changed" and message["call"]["call_id"] == call_id and message["event"]["event_type"] == event_type:
                return time.monotonic()

    async def measure(client: httpx.AsyncClient) -> dict[str, float]:
        response = await client.post(f"{topology.url}/api/realtime/calls", json={"sdp": offer})
        call_id = response.json()["call_id"]
        await asyncio.gather(*(heard(sock, call_id, "call.answered") for sock in sockets))
        # From sending the DELETE to each subscriber's call.ended push.
        started = time.monotonic()
        ended = asyncio.ensure_future(client.delete(f"{topology.url}/api/realtime/calls/{call_id}"))
        times = await asyncio.gather(*(heard(sock, call_id, "call.ended") for sock in sockets))
        await ended
        await asyncio.sleep(1)
        delays = [(t - started) * 1000 for t in times]
        return {"p50_ms": round(pct(delays, 0.5), 1), "p99_ms": round(pct(delays, 0.99), 1), "max_ms": round(max(delays), 1)}

    try:
        async with httpx.AsyncClient(timeout=60) as client:
            # Baseline, same run: the same measure with 10 subscribers.
            await connect(min(10, args.subscribers))
            baseline = [await measure(client) for _ in range(args.runs)]
            await connect(args.subscribers - len(sockets))
            runs = [await measure(client) for _ in range(args.runs)]
        return {
            "subscribers": len(sockets),
            "baseline_10_median_p99_ms": statistics.median(r["p99_ms"] for r in baseline),
            "median_p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "median_p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "runs": runs,
        }
    finally:
        await asyncio.gather(*(sock.close() for sock in sockets), return_exceptions=True)


SCENARIOS = {"burst": burst, "churn": churn, "body": body, "slow": slow, "fanout": fanout}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    var = Path(tempfile.mkdtemp(prefix="iaposte-bench-"))
    servers._give_to_server_user(var)
    extra = {
        "REALTIME_THROTTLE_ANONYMOUS": "",
        "REALTIME_MAX_ACTIVE_CALLS": "0",
        "LOCALREALTIME_ANSWER_DELAY_MS": str(args.delay_ms),
        "DATABASE_POOL": "false" if args.no_pool else "true",
        "DATABASE_POOL_MAX_SIZE": "40",
    }
    topology = await asyncio.to_thread(scaled.start, var, extra=extra)
    try:
        offer = await make_offer()
        report: dict[str, Any] = {"load_before": os.getloadavg()}
        for name in args.scenarios.split(","):
            report[name] = await SCENARIOS[name](topology, offer, args)
            report[name]["load_after"] = os.getloadavg()
            print(json.dumps({name: report[name]}), flush=True)
        return report
    finally:
        await asyncio.to_thread(topology.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="burst,churn,body,slow,fanout")
    parser.add_argument("--calls", type=int, default=200, help="burst: concurrent creates")
    parser.add_argument("--delay-ms", type=int, default=500, help="the local engine's answer delay")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=50.0, help="churn: calls per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="churn and slow: duration")
    parser.add_argument("--body-mib", type=int, default=300)
    parser.add_argument("--slow", type=int, default=1100, help="slow-header connections")
    parser.add_argument("--trickle", type=float, default=10.0, help="seconds between two header bytes")
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--no-pool", action="store_true", help="PostgreSQL without the connection pool (for comparison)")
    parser.add_argument("--quick", action="store_true", help="every scenario, small (the test suite runs it)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.runs, args.rate, args.seconds = 10, 1, 5.0, 3.0
        args.body_mib, args.slow, args.trickle, args.subscribers = 20, 30, 2.0, 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    report = asyncio.run(run(args))
    print(json.dumps({"summary": report}, default=str))


if __name__ == "__main__":
    main()
