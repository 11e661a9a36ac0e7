"""WebSocket fan-out: how long after a DELETE does the last of N subscribers hear about it?

Starts one server process (`manage.py serve` on loopback, embedded engine, a fresh SQLite file), opens N
subscribers to /ws/realtime/calls, then per run: creates a call through the REST API (with a real
aiortc offer), waits until every subscriber has its pushes, sends DELETE and records, for each
subscriber, the time from sending the DELETE to receiving the `call.ended` push.

    .venv/bin/python bench/ws_fanout.py --subscribers 1000 --runs 7
    .venv/bin/python bench/ws_fanout.py --variant stock-layer,no-encode-cache   # what the home-made parts replace
    .venv/bin/python bench/ws_fanout.py --variant channels-dispatch             # Channels' own consumer loop
    .venv/bin/python bench/ws_fanout.py --parts                                 # the parts alone, CPU per push
    .venv/bin/python bench/ws_fanout.py --parts --redis-url redis://127.0.0.1:PORT/0   # and the pub/sub layers
    .venv/bin/python bench/ws_fanout.py --quick                                 # smoke run (tests/test_bench.py)

Subscribers run in client processes (`--clients`, one by default); every timestamp is
CLOCK_MONOTONIC, shared by the processes of one machine. Real subscribers sit on other machines;
here they share the cores with the server, so the figures include their work. One client process
takes at most one of the two cores; two take both, and the server then competes with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import cpu_seconds  # noqa: E402


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(workdir: Path, profile: str = "", variant: str = "", redis_url: str = "") -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "iaposte.settings",
        "DEBUG": "true",
        "SECRET_KEY": "bench-only-not-secret",
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        "PORT": str(port),
        "LOCALREALTIME_PORT": str(_free_port()),
        "OPENAI_API_KEY": "",
        "LOG_LEVEL": "WARNING",
        "BENCH_VARIANT": variant,
        "BENCH_REDIS_URL": redis_url,
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    log = (workdir / "server.log").open("wb")
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    process = subprocess.Popen(
        [sys.executable, *profiler, "bench/_variant_server.py", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: _raise_fd_limit(8192),
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/realtime/stats", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError((workdir / "server.log").read_text()[-3000:])


# --- subscriber processes ---------------------------------------------------------------------


def subscriber_process(url: str, count: int, commands: Any, results: Any) -> None:
    """Hold `count` sockets; for each ("watch", call_id) command, report when each got its end."""
    _raise_fd_limit(count + 256)
    asyncio.run(_subscribe(url, count, commands, results))


async def _subscribe(url: str, count: int, commands: Any, results: Any) -> None:
    import websockets

    ws_url = url.replace("http://", "ws://") + "/ws/realtime/calls"
    sockets = []
    for start in range(0, count, 100):
        batch = [websockets.connect(ws_url, origin=url, open_timeout=60, max_queue=None) for _ in range(start, min(start + 100, count))]
        sockets += await asyncio.gather(*batch)
    results.put(("ready", count))
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, commands.get)
        if command[0] == "stop":
            break
        _, call_id, event_type = command
        received = await asyncio.gather(*(_wait_for(sock, call_id, event_type) for sock in sockets))
        results.put(("received", received))
    await asyncio.gather(*(sock.close() for sock in sockets))


async def _wait_for(sock: Any, call_id: str, event_type: str) -> int:
    while True:
        message = json.loads(await asyncio.wait_for(sock.recv(), timeout=60))
        # The feed also carries `stats.changed` pushes (no call, no event): not what is timed here.
        if message.get("type") != "call.changed":
            continue
        if message["call"]["call_id"] == call_id and message["event"]["event_type"] == event_type:
            return time.monotonic_ns()


# --- one run ----------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _offer() -> str:
    from localrealtime.caller import sample_offer

    return await sample_offer()


def _cpu_ms(pid: int) -> float:
    """CPU time (user + system) a process has used so far: the server's work, whatever the load."""
    return cpu_seconds(pid) * 1000


def one_run(url: str, offer: str, queues: list[tuple[Any, Any]], pid: int) -> dict[str, float]:
    import httpx

    with httpx.Client(base_url=url, timeout=30) as http:
        created = http.post("/api/realtime/calls", json={"sdp": offer, "session": {"voice": "alloy"}})
        created.raise_for_status()
        call_id = created.json()["call_id"]
        # Wait until every subscriber has seen the call answered: the sockets are idle before the DELETE.
        for commands, _ in queues:
            commands.put(("watch", call_id, "call.answered"))
        for _, results in queues:
            results.get(timeout=120)
        for commands, _ in queues:
            commands.put(("watch", call_id, "call.ended"))
        time.sleep(0.5)  # let the subscribers' readers park on recv()
        cpu_before = _cpu_ms(pid)
        sent = time.monotonic_ns()
        response = http.delete(f"/api/realtime/calls/{call_id}")
        response_ms = (time.monotonic_ns() - sent) / 1e6
        response.raise_for_status()
    latencies: list[float] = []
    for _, results in queues:
        _, received = results.get(timeout=120)
        latencies += [(at - sent) / 1e6 for at in received]
    time.sleep(1.0)  # the statistics push that follows the end reaches every socket too
    cpu_ms = _cpu_ms(pid) - cpu_before
    return {
        "p50": _percentile(latencies, 50),
        "p99": _percentile(latencies, 99),
        "max": max(latencies),
        "delete_ms": response_ms,
        "n": len(latencies),
        "cpu_ms": cpu_ms,
    }


# --- the home-made parts alone, in this process (CPU per push, robust to a loaded machine) ------


def measure_parts(subscribers: int, repeats: int, redis_url: str = "") -> None:
    """CPU per push to `subscribers` members: delivery through the forked in-memory layer vs
    Channels' own, and encoding with the consumers' cache vs once per socket; with `redis_url`,
    delivery and encoding through our Redis pub/sub layer vs channels_redis'. Minimum of `repeats`."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
    os.environ.setdefault("DEBUG", "true")
    django.setup()
    from channels.layers import InMemoryChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer

    from realtime import consumers
    from realtime.layers import FanOutInMemoryChannelLayer, FanOutRedisPubSubChannelLayer

    call: dict[str, Any] = {
        "call_id": "call_" + "a" * 32,
        "status": "ended",
        "model": "gpt-realtime",
        "voice": "alloy",
        "end_reason": "api_hangup",
    }
    call |= {"instructions": "You are a helpful assistant. " * 4, "session": {"type": "realtime", "audio": {"output": {"voice": "alloy"}}}}
    event = {"id": 1, "call_id": call["call_id"], "event_type": "call.ended", "event_data": {"reason": "api_hangup"}, "actor": "api"}
    message = {"type": "call.changed", "event": event, "call": call, "api_key_id": None}

    async def deliver(layer: Any) -> float:
        members = [await layer.new_channel() for _ in range(subscribers)]
        for channel in members:
            await layer.group_add("feed", channel)
        started = time.perf_counter()
        await layer.group_send("feed", message)
        await asyncio.gather(*(layer.receive(channel) for channel in members))
        return (time.perf_counter() - started) * 1000

    def encode(cached: bool) -> float:
        started = time.perf_counter()
        for _ in range(subscribers):
            received = dict(message)  # what each member gets from the fork: its own top-level dict
            if cached:
                consumers._encode(received, ("event", "call"))
            else:
                json.dumps({"type": received["type"], "event": received["event"], "call": received["call"]})
        return (time.perf_counter() - started) * 1000

    async def deliver_pubsub(layer_class: Any) -> float:
        """One process's members on one layer, the push from another (another web process), over a
        real Redis; delivery and encoding per member, as the consumers do (CPU of this process)."""
        receiving, sending = layer_class(hosts=[redis_url]), layer_class(hosts=[redis_url])
        try:
            members = [await receiving.new_channel() for _ in range(subscribers)]
            for channel in members:
                await receiving.group_add("feed", channel)
            await asyncio.sleep(0.2)  # subscribed before the PUBLISH
            started = time.process_time()
            await sending.group_send("feed", message)
            for received in await asyncio.gather(*(receiving.receive(channel) for channel in members)):
                consumers._encode(received, ("event", "call"))
            return (time.process_time() - started) * 1000
        finally:
            await receiving.flush()
            await sending.flush()

    rows = {
        "delivery, realtime.layers.FanOutInMemoryChannelLayer": lambda: asyncio.run(deliver(FanOutInMemoryChannelLayer())),
        "delivery, channels.layers.InMemoryChannelLayer": lambda: asyncio.run(deliver(InMemoryChannelLayer())),
        "encoding, the consumers' cache": lambda: encode(True),
        "encoding, once per socket": lambda: encode(False),
    }
    if redis_url:
        rows["delivery + encoding, realtime.layers.FanOutRedisPubSubChannelLayer"] = lambda: asyncio.run(
            deliver_pubsub(FanOutRedisPubSubChannelLayer)
        )
        rows["delivery + encoding, channels_redis RedisPubSubChannelLayer"] = lambda: asyncio.run(deliver_pubsub(RedisPubSubChannelLayer))
    print(f"CPU per push to {subscribers} subscribers, ms (minimum of {repeats}):")
    for name, run in rows.items():
        print(f"  {name:<70} {min(run() for _ in range(repeats)):8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--clients", type=int, default=1, help="subscriber processes")
    parser.add_argument("--profile", default="", help="write the server's cProfile stats to this file")
    parser.add_argument(
        "--variant",
        default="",
        help="swap home-made parts for what they replace: stock-layer, no-encode-cache, channels-dispatch, redis (comma-separated; see _variant_server.py)",
    )
    parser.add_argument("--redis-url", default="", help="Redis for --variant redis, and for --parts' pub/sub rows")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 subscribers, 1 run (the test suite runs it)")
    parser.add_argument("--parts", action="store_true", help="measure the home-made parts alone, in this process, and stop")
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.runs = 20, 1
    if args.parts:
        measure_parts(args.subscribers, 3 if args.quick else 15, args.redis_url)
        return
    _raise_fd_limit(args.subscribers + 256)

    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(Path(tmp), args.profile, args.variant, args.redis_url)
        queues: list[tuple[Any, Any]] = []
        workers: list[mp.Process] = []
        try:
            context = mp.get_context("spawn")
            share = [args.subscribers // args.clients + (i < args.subscribers % args.clients) for i in range(args.clients)]
            for count in share:
                commands, results = context.Queue(), context.Queue()
                worker = context.Process(target=subscriber_process, args=(url, count, commands, results), daemon=True)
                worker.start()
                workers.append(worker)
                queues.append((commands, results))
            for _, results in queues:
                results.get(timeout=180)
            offer = asyncio.run(_offer())
            one_run(url, offer, queues, server.pid)  # warm-up, not reported
            runs = [one_run(url, offer, queues, server.pid) for _ in range(args.runs)]
        finally:
            for commands, _ in queues:
                commands.put(("stop",))
            for worker in workers:
                worker.join(30)
                if worker.is_alive():
                    worker.kill()
            server.terminate()
            server.wait(10)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}")
    print(f"{args.subscribers} subscribers in {args.clients} client processes, one server process, variant: {args.variant or 'shipped'}")
    print("run  n     p50 ms  p99 ms  max ms  DELETE ms  server CPU ms")
    for i, run in enumerate(runs, 1):
        print(f"{i:<4} {run['n']:<5} {run['p50']:7.1f} {run['p99']:7.1f} {run['max']:7.1f} {run['delete_ms']:9.1f} {run['cpu_ms']:14.1f}")
    median = {key: statistics.median(run[key] for run in runs) for key in ("p50", "p99", "max", "delete_ms", "cpu_ms")}
    print(f"median     {median['p50']:7.1f} {median['p99']:7.1f} {median['max']:7.1f} {median['delete_ms']:9.1f} {median['cpu_ms']:14.1f}")


if __name__ == "__main__":
    main()
