"""The goals of the scaled topology, measured on it (`make run-scaled`'s Procfile under honcho:
nginx, two web processes, a worker, PostgreSQL, Redis, the local engine as its own process).

Scenarios (each measures its baseline in the same run, before the load):
- burst:   N concurrent creates through nginx, upstream answering after --delay-ms; total time, p50/p99
- churn:   create, hold 1 s, end, at --rate calls/s for --seconds; 5xx, leaked calls, p99, memory
- body:    a 300 MiB anonymous body through nginx; web processes' memory, other requests' latency
- slow:    --slow connections trickling header bytes (one per --trickle s); other clients' latency
- fanout:  --subscribers WebSocket feeds through nginx (spread over the two web processes), held by
           --clients client processes; the delay from a DELETE to each subscriber's call.ended
           push, p50/p99, and the CPU each server process and the clients spent on it
- pgcpu:   --creates sequential creates, then their DELETEs; CPU per create and per DELETE of each
           server process, PostgreSQL's (backends included) above all; with --no-pool to compare

    .venv/bin/python bench/scaled.py --scenarios burst --delay-ms 500 --runs 5
    .venv/bin/python bench/scaled.py --scenarios churn --rate 50 --seconds 60 --delay-ms 0
    .venv/bin/python bench/scaled.py --scenarios fanout --subscribers 2000 --runs 3 --delay-ms 0
    .venv/bin/python bench/scaled.py --scenarios pgcpu --creates 200 --delay-ms 0 [--no-pool]
    .venv/bin/python bench/scaled.py --quick          # every scenario, small (tests/test_bench_scaled.py)

Clients run on the same 2 cores as the servers (in this process; fan-out's subscribers in their
own processes): latencies include their work; CPU times (utime + stime from /proc, what each
server process spent) do not, and hold on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import shutil
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

from bench import _subscribers  # noqa: E402
from bench._lean_http import LeanHTTP, LeanHTTPError  # noqa: E402
from bench._server import speed_ms  # noqa: E402
from deploy import scaled, servers  # noqa: E402


class HttpxClient:
    """LeanHTTP's calls made with httpx (`--http httpx`), to compare what the client costs."""

    def __init__(self, base_url: str, connections: int) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=connections))

    async def __aenter__(self) -> HttpxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def post_json(self, path: str, payload: Any) -> tuple[int, Any]:
        return await self._call(self.client.post(path, json=payload))

    async def delete(self, path: str) -> tuple[int, Any]:
        return await self._call(self.client.delete(path))

    async def _call(self, sent: Any) -> tuple[int, Any]:
        try:
            response = await sent
        except httpx.HTTPError as exc:
            raise LeanHTTPError(type(exc).__name__) from exc
        return response.status_code, response.json() if response.content else None


def load_client(args: argparse.Namespace, url: str, connections: int) -> LeanHTTP | HttpxClient:
    """The client of the load scenarios (burst, churn): lean by default (bench/_lean_http.py)."""
    return LeanHTTP(url) if args.http == "lean" else HttpxClient(url, connections)


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


def web_rss(topology: scaled.Topology, names: tuple[str, ...] = ("web1", "web2")) -> dict[str, float]:
    pids = topology.groups[0].pids()
    return {name: round(rss_mib(pids[name]), 1) for name in names}


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
    pids = server_pids(topology)

    async def once(n: int) -> tuple[float, list[float], list[int], dict[str, float]]:
        async with load_client(args, topology.url, n) as client:

            async def one() -> tuple[float, int, str]:
                started = time.monotonic()
                status, body = await client.post_json("/api/realtime/calls", {"sdp": offer})
                call_id = body.get("call_id", "") if status == 201 else ""
                return time.monotonic() - started, status, call_id

            cpu_before, client_before = tree_cpu_ms(pids), _own_cpu_ms()
            started = time.monotonic()
            results = await asyncio.gather(*(one() for _ in range(n)))
            total = time.monotonic() - started
            # What each process spent while the creates were answered (the worker joining the
            # new calls' sidebands meanwhile included), per create; and this client, on the same cores.
            cpu = {name: round(spent / n, 1) for name, spent in cpu_spent(cpu_before, tree_cpu_ms(pids)).items()}
            cpu["client"] = round((_own_cpu_ms() - client_before) / n, 1)
        await end_all(topology.url, [c for _, _, c in results if c])
        return total, [r[0] for r in results], [r[1] for r in results], cpu

    baseline = [await once(1) for _ in range(3)]
    runs: list[dict[str, Any]] = []
    totals: list[float] = []
    for _ in range(args.runs):
        total, latencies, statuses, cpu = await once(args.calls)
        totals.append(total)
        runs.append(
            {
                "total_s": round(total, 2),
                "p50_s": round(pct(latencies, 0.5), 2),
                "p99_s": round(pct(latencies, 0.99), 2),
                "statuses": dict(sorted({s: statuses.count(s) for s in set(statuses)}.items())),
                "cpu_ms_per_create": cpu,
            }
        )
        await asyncio.sleep(2)
    return {
        "http": args.http,
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
    refusals: list[str] = []  # each 5xx create: its status, error code and message
    rss_before = web_rss(topology)
    # The worker's and the engine's too: a process that keeps what its calls leave grows with them.
    others_before = web_rss(topology, ("worker", "engine"))
    pids = server_pids(topology)
    cpu_before, client_before = tree_cpu_ms(pids), _own_cpu_ms()
    async with load_client(args, topology.url, 1000) as client:

        async def one() -> None:
            started = time.monotonic()
            try:
                status, body = await client.post_json("/api/realtime/calls", {"sdp": offer})
            except LeanHTTPError as exc:
                errors.append(str(exc))
                return
            latencies.append(time.monotonic() - started)
            statuses.append(status)
            if status >= 500:
                error = body.get("error", {}) if isinstance(body, dict) else {}
                refusals.append(f"{status} {error.get('code')}: {str(error.get('message'))[:120]}")
            if status == 201:
                await asyncio.sleep(1.0)
                try:
                    ended, _ = await client.delete(f"/api/realtime/calls/{body['call_id']}")
                    statuses.append(ended)
                except LeanHTTPError as exc:
                    errors.append(str(exc))

        # The web processes' memory through the run: flat, or growing with the calls served.
        samples: list[dict[str, float]] = []

        async def sample_rss() -> None:
            while True:
                await asyncio.sleep(max(1.0, args.seconds / 10))
                samples.append(web_rss(topology))

        sampler = asyncio.ensure_future(sample_rss())
        tasks = []
        started = time.monotonic()
        for i in range(int(args.rate * args.seconds)):
            await asyncio.sleep(max(0.0, started + i / args.rate - time.monotonic()))
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        sampler.cancel()
    await asyncio.sleep(3)
    # Where the machine's CPU went, per call (create, hold, DELETE, and the monitor's work between):
    # each server process with its children, the pauses between calls included.
    cpu = cpu_spent(cpu_before, tree_cpu_ms(pids))
    cpu["client"] = round(_own_cpu_ms() - client_before, 1)
    return {
        "http": args.http,
        "rate": args.rate,
        "seconds": args.seconds,
        "achieved_rate": round(len(tasks) / elapsed, 1),
        "creates": len(latencies),
        "5xx": sum(1 for s in statuses if s >= 500),
        "statuses": dict(sorted({s: statuses.count(s) for s in set(statuses)}.items())),
        "transport_errors": len(errors),
        "transport_error_kinds": dict(collections.Counter(errors).most_common(5)),
        "5xx_errors": dict(collections.Counter(refusals).most_common(5)),
        "p50_create_s": round(pct(latencies, 0.5), 3),
        "p99_create_s": round(pct(latencies, 0.99), 3),
        "leaked_calls": await live_calls(topology.url),
        "web_rss_mib_before": rss_before,
        "web_rss_mib_after": web_rss(topology),
        "web_rss_mib_during": samples,
        "worker_engine_rss_mib_before": others_before,
        "worker_engine_rss_mib_after": web_rss(topology, ("worker", "engine")),
        "cpu_ms_per_call": {name: round(spent / max(1, len(latencies)), 1) for name, spent in cpu.items()},
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


class LeanClients:
    """Subscribers in client processes of their own (bench/_subscribers.py)."""

    def __init__(self, subscribers: _subscribers.Subscribers) -> None:
        self.subscribers = subscribers

    @classmethod
    async def start(cls, url: str, count: int, processes: int) -> LeanClients:
        return cls(await asyncio.to_thread(_subscribers.Subscribers, url, count, processes))

    async def watch(self, call_id: str, event_type: str) -> None:
        await asyncio.to_thread(self.subscribers.watch, call_id, event_type)

    async def received(self) -> tuple[list[int], float, int, int]:
        return await asyncio.to_thread(self.subscribers.received)

    async def stop(self) -> None:
        await asyncio.to_thread(self.subscribers.stop)


class AsyncioClients:
    """Subscribers in this process, with websockets' asyncio client (one task per socket per
    push, every frame decoded as JSON): what this bench used first, kept to compare."""

    def __init__(self, sockets: list[Any]) -> None:
        self.sockets = sockets
        self.pending: asyncio.Future[list[int]] | None = None
        self.cpu_before = 0.0
        self.frames = 0

    @classmethod
    async def start(cls, url: str, count: int, processes: int) -> AsyncioClients:
        ws_url = url.replace("http://", "ws://") + "/ws/realtime/calls"
        sockets: list[Any] = []
        for i in range(0, count, 100):
            batch = (websockets.connect(ws_url, origin=Origin(url), open_timeout=60, max_queue=None) for _ in range(min(100, count - i)))
            sockets += await asyncio.gather(*batch)
        return cls(sockets)

    async def watch(self, call_id: str, event_type: str) -> None:
        async def heard(sock: Any) -> int:
            while True:
                message = json.loads(await asyncio.wait_for(sock.recv(), timeout=60))
                self.frames += 1
                if message["type"] != "call.changed" or message["event"]["event_type"] != event_type:
                    continue
                if not call_id or message["call"]["call_id"] == call_id:
                    return time.monotonic_ns()

        self.cpu_before, self.frames = _own_cpu_ms(), 0
        self.pending = asyncio.ensure_future(asyncio.gather(*(heard(sock) for sock in self.sockets)))
        await asyncio.sleep(0)

    async def received(self) -> tuple[list[int], float, int, int]:
        assert self.pending is not None
        times = await self.pending
        # websockets answers pings itself, out of sight: not counted.
        return times, _own_cpu_ms() - self.cpu_before, self.frames, 0

    async def stop(self) -> None:
        await asyncio.gather(*(sock.close() for sock in self.sockets), return_exceptions=True)


def _own_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000


def _proc_stats() -> dict[int, list[str]]:
    """Every process's /proc/PID/stat fields after the command name (field 3 onwards)."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
    return stats


def tree_cpu_ms(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) used so far by each named process and all its descendants, ended
    ones included (their time is in their parent's cutime/cstime once reaped): what a server costs
    whatever the machine's load. A PostgreSQL or nginx pid covers its backends or workers."""
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    tick = os.sysconf("SC_CLK_TCK")

    def total(pid: int) -> int:
        fields = stats.get(pid)
        own = sum(int(value) for value in fields[11:15]) if fields else 0
        return own + sum(total(child) for child in children.get(pid, []))

    return {name: total(pid) * 1000 / tick for name, pid in pids.items()}


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 1) for name in before}


SERVERS = ("web1", "web2", "nginx", "redis", "postgres", "worker", "engine")


def server_pids(topology: scaled.Topology) -> dict[str, int]:
    pids = topology.groups[0].pids()
    return {name: pids[name] for name in SERVERS if name in pids}


async def fanout(topology: scaled.Topology, offer: str, args: argparse.Namespace) -> dict[str, Any]:
    """From sending a DELETE to each subscriber reading its call.ended push, and what it costs in
    CPU: each server process (from the DELETE until the last subscriber has its frame) and the
    client processes. 10 subscribers first (the baseline), then --subscribers."""
    pids = server_pids(topology)

    async def measure(client: httpx.AsyncClient, subscribers: Any) -> dict[str, Any]:
        await subscribers.watch("", "call.answered")
        response = await client.post(f"{topology.url}/api/realtime/calls", json={"sdp": offer})
        call_id = response.json()["call_id"]
        await subscribers.received()
        # Every socket idle before the DELETE: the statistics push that follows the answer
        # (publish.STATS_PUSH_DELAY later) has gone out, as in bench/ws_fanout.py. With
        # --settle 0 that push lands in the DELETE's window: two pushes fanned out, not one.
        await asyncio.sleep(args.settle)
        await subscribers.watch(call_id, "call.ended")
        cpu_before = tree_cpu_ms(pids)
        started = time.monotonic_ns()
        ended = asyncio.ensure_future(client.delete(f"{topology.url}/api/realtime/calls/{call_id}"))
        times, client_cpu, frames, pings = await subscribers.received()
        cpu = cpu_spent(cpu_before, tree_cpu_ms(pids))
        await ended
        await asyncio.sleep(1)
        delays = [(t - started) / 1e6 for t in times]
        return {
            "p50_ms": round(pct(delays, 0.5), 1),
            "p99_ms": round(pct(delays, 0.99), 1),
            "max_ms": round(max(delays), 1),
            "web_cpu_ms": round(cpu["web1"] + cpu["web2"], 1),
            "client_cpu_ms": round(client_cpu, 1),
            # More than 1: other pushes reached the sockets in the same window (the statistics
            # snapshot, sent shortly after the transition), and their cost is in the CPU figures too.
            "frames_per_subscriber": round(frames / len(times), 2),
            # The server pings each socket every 20 s; those that land in the window cost the same
            # write path as a push (lean clients only).
            "pings_per_subscriber": round(pings / len(times), 2) if args.client == "lean" else None,
            "cpu_ms": cpu,
        }

    def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
        return {key: statistics.median(r[key] for r in runs) for key in ("p50_ms", "p99_ms", "web_cpu_ms", "client_cpu_ms")}

    clients = LeanClients if args.client == "lean" else AsyncioClients
    async with httpx.AsyncClient(timeout=60) as client:
        # Baseline, same run: the same measure with 10 subscribers.
        few = await clients.start(topology.url, min(10, args.subscribers), 1)
        try:
            await measure(client, few)  # warm-up (the first DELETE of a process costs more), not reported
            baseline = [await measure(client, few) for _ in range(args.runs)]
        finally:
            await few.stop()
        many = await clients.start(topology.url, args.subscribers, args.clients)
        try:
            runs = [await measure(client, many) for _ in range(args.runs)]
        finally:
            await many.stop()
    return {
        "subscribers": args.subscribers,
        "settle_s": args.settle,
        "client": args.client,
        "client_processes": args.clients if args.client == "lean" else "this one",
        "baseline_10": summary(baseline),
        "median": summary(runs),
        "runs": runs,
    }


async def pgcpu(topology: scaled.Topology, offer: str, args: argparse.Namespace) -> dict[str, Any]:
    """CPU per create and per DELETE of each server process, PostgreSQL's above all (every
    process of the server: backends, ended ones included, and its background processes), over
    --creates sequential creates through nginx, then their DELETEs. The same run measures an idle
    spell first, to show what the servers spend when nothing is asked of them."""
    import psycopg

    pids = server_pids(topology)
    # Backends PostgreSQL started (pg_stat_database.sessions), read on one connection held throughout.
    stats = await psycopg.AsyncConnection.connect(topology.env["DATABASE_URL"], autocommit=True)

    async def sessions() -> int:
        row = await (await stats.execute("SELECT sum(sessions) FROM pg_stat_database")).fetchone()
        return int(row[0]) if row else 0

    async def timed(requests: Any) -> tuple[dict[str, float], float, int]:
        before, started, opened = tree_cpu_ms(pids), time.monotonic(), await sessions()
        await requests
        return cpu_spent(before, tree_cpu_ms(pids)), time.monotonic() - started, await sessions() - opened

    async def creates(client: httpx.AsyncClient, count: int, ids: list[str]) -> None:
        for _ in range(count):
            response = await client.post(f"{topology.url}/api/realtime/calls", json={"sdp": offer})
            response.raise_for_status()
            ids.append(response.json()["call_id"])

    async def deletes(client: httpx.AsyncClient, ids: list[str]) -> None:
        for call_id in ids:
            (await client.delete(f"{topology.url}/api/realtime/calls/{call_id}")).raise_for_status()

    def per(cpu: dict[str, float], count: int) -> dict[str, float]:
        return {name: round(ms / count, 2) for name, ms in cpu.items()}

    async with stats, httpx.AsyncClient(timeout=60) as client:
        warm: list[str] = []
        await creates(client, 5, warm)  # pools filled, caches warm: not reported
        await deletes(client, warm)
        idle, idle_s, _ = await timed(asyncio.sleep(5))
        ids: list[str] = []
        created, created_s, created_sessions = await timed(creates(client, args.creates, ids))
        ended, ended_s, ended_sessions = await timed(deletes(client, ids))

    def net(cpu: dict[str, float], seconds: float) -> dict[str, float]:
        """Less what the process spends idle over as long (a worker's polling, PostgreSQL's own)."""
        return per({name: ms - idle[name] / idle_s * seconds for name, ms in cpu.items()}, args.creates)

    return {
        "creates": args.creates,
        "pool": not args.no_pool,
        "idle_cpu_ms_per_s": {name: round(ms / idle_s, 2) for name, ms in idle.items()},
        "cpu_ms_per_create": per(created, args.creates),
        "net_cpu_ms_per_create": net(created, created_s),
        "creates_per_s": round(args.creates / created_s, 1),
        "backends_started_per_create": round(created_sessions / args.creates, 2),
        "cpu_ms_per_delete": per(ended, args.creates),
        "net_cpu_ms_per_delete": net(ended, ended_s),
        "deletes_per_s": round(args.creates / ended_s, 1),
        "backends_started_per_delete": round(ended_sessions / args.creates, 2),
    }


SCENARIOS = {"burst": burst, "churn": churn, "body": body, "slow": slow, "fanout": fanout, "pgcpu": pgcpu}


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
        report: dict[str, Any] = {"load_before": os.getloadavg(), "speed_probe_ms_before": speed_ms()}
        for name in args.scenarios.split(","):
            report[name] = await SCENARIOS[name](topology, offer, args)
            report[name]["load_after"] = os.getloadavg()
            report[name]["speed_probe_ms_after"] = speed_ms()
            print(json.dumps({name: report[name]}), flush=True)
        return report
    finally:
        await asyncio.to_thread(topology.stop)
        # The servers' data (PostgreSQL's cluster, logs) is this run's only: kept on request.
        if args.keep:
            print(f"servers' folder kept: {var}", file=sys.stderr)
        else:
            shutil.rmtree(var, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="burst,churn,body,slow,fanout,pgcpu")
    parser.add_argument("--calls", type=int, default=200, help="burst: concurrent creates")
    parser.add_argument("--delay-ms", type=int, default=500, help="the local engine's answer delay")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=50.0, help="churn: calls per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="churn and slow: duration")
    parser.add_argument("--body-mib", type=int, default=300)
    parser.add_argument("--slow", type=int, default=1100, help="slow-header connections")
    parser.add_argument("--trickle", type=float, default=10.0, help="seconds between two header bytes")
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--creates", type=int, default=200, help="pgcpu: sequential creates")
    parser.add_argument("--client", choices=("lean", "asyncio"), default="lean", help="fanout: the subscribers' client (see fanout())")
    parser.add_argument("--clients", type=int, default=2, help="fanout: lean client processes")
    parser.add_argument("--settle", type=float, default=0.5, help="fanout: seconds between the create's push and the DELETE")
    parser.add_argument("--http", choices=("lean", "httpx"), default="lean", help="burst and churn: the HTTP client (bench/_lean_http.py)")
    parser.add_argument("--no-pool", action="store_true", help="PostgreSQL without the connection pool (for comparison)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' folder (their logs) after the run")
    parser.add_argument("--quick", action="store_true", help="every scenario, small (the test suite runs it)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.runs, args.rate, args.seconds = 10, 1, 5.0, 3.0
        args.body_mib, args.slow, args.trickle, args.subscribers, args.creates = 20, 30, 2.0, 20, 10
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    report = asyncio.run(run(args))
    print(json.dumps({"summary": report}, default=str))


if __name__ == "__main__":
    main()
