"""A million calls: every read, push and background pass against a long history, beside the same
on an empty database, in the same run (see docs/benchmarks.md, "A million calls").

    DATABASE_URL=sqlite:///big.sqlite3 python manage.py migrate
    DATABASE_URL=sqlite:///big.sqlite3 python bench/seed_scale.py --calls 1000000   # once: minutes
    python bench/scale.py --database big.sqlite3 [--repeat 15]
    python bench/scale.py --database postgres://user@host:port/big   # PostgreSQL: the empty
                                   # baseline is the database `big_empty` on the same server, remade
    python bench/scale.py --quick          # seeds 2,000 calls into a temporary file (the suite runs it)

For each database (empty, and the history): a broker server (`manage.py serve`, no monitors: the passes
are timed apart) in front of an engine server (the `localrealtime` stand-in for OpenAI, apart, as
OpenAI is another host), the two brokers running side by side; then
- the median time of GET /stats, the call list (first page, by status, a deep page through the
  cursor), a call's detail, events and transcript; the admin call list, a filtered list, id
  searches (full, prefix, the demo page's short id), a caller number search, and a call's page;
- the broker's CPU (utime + stime from /proc) per create + DELETE cycle, with a subscriber on the
  list feed, and per create alone; the median create latency beside a direct `openai` SDK call to
  the same engine (the overhead the broker adds): the median of `--rounds` rounds, alternating
  between the two brokers so that both see the same machine load;
- each sweeper and monitor query's time (in this process, on the same database);
and, for the history only, 200 concurrent creates with the upstream answering in 500 ms in the
embedded `make run` layout (one process, engine included). Reads never change the history; the
creates add a few hundred calls to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import cpu_seconds, database_url, engine, machine, production_env, server, speed_ms, speed_note  # noqa: E402
from bench.create_concurrency import burst, make_offer, quantile  # noqa: E402

_DJANGO_SETUP = "import django; django.setup()\n"


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm: imports, caches, the first connection
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


Database = Path | str  # a SQLite file, or a database URL


# The servers measured keep what they hold (the retention purge is timed apart, with the passes):
# the seeded history is 90 days that were never purged, where a real one is purged as it ages, so
# a server would otherwise spend its purge share (REALTIME_PURGE_SHARE) on that backlog meanwhile.
NO_PURGE = {f"REALTIME_RETAIN_{kind}_DAYS": "" for kind in ("SDP", "SESSION", "TRANSCRIPTS", "CALLER_NUMBERS", "EVENTS", "CALLS")}


def django_env(database: Database) -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "iaposte.settings", "DEBUG": "true", "DATABASE_URL": database_url(database)}


def empty_beside(url: str) -> str:
    """A fresh database named `<name>_empty` on the server of the PostgreSQL `url` (dropped first)."""
    import psycopg
    from psycopg import sql

    base, name = url.rsplit("/", 1)
    empty = f"{name}_empty"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(empty)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(empty)))
    return f"{base}/{empty}"


def prepare(database: Database) -> dict[str, Any]:
    """Migrate, make a staff user for the admin, and pick the calls the reads will ask for."""
    env = django_env(database)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    count = "import django; django.setup(); from realtime.models import Call; print(Call.objects.exists())"
    if (
        subprocess.run([sys.executable, "-c", count], cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.strip()
        == "False"
    ):
        # "Empty": a handful of calls, so that a call's detail, events and transcript exist, and
        # one key's page of active calls, so that `?status=active` reads as many rows as in the
        # history (with the history's 1 % active, this key would have had one).
        seed = [sys.executable, "bench/seed_scale.py", "--calls", "50", "--active", "60", "--api-keys", "1"]
        subprocess.run(seed, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    script = (
        _DJANGO_SETUP
        + """
import json
from django.contrib.auth.models import User
from realtime.models import Call
User.objects.filter(username="bench").delete()
User.objects.create_superuser("bench", password="bench-only")
from realtime.models import ApiKey
from realtime.services import API_KEY_PREFIX, API_KEY_VISIBLE_CHARS, hash_api_key
import secrets
# An integrator's key among the history's (its secret replaced by one the benchmark knows: only
# its hash is stored); the reads see that integrator's calls, as theirs would.
key = ApiKey.objects.filter(revoked_at__isnull=True, expires_at__isnull=True).order_by("pk").first()
raw = API_KEY_PREFIX + secrets.token_urlsafe(32)
if key is None:
    key = ApiKey(name="bench")
key.prefix, key.key_hash = raw[:API_KEY_VISIBLE_CHARS], hash_api_key(raw)
key.save()
ended = Call.objects.filter(status="ended", has_transcript=True, api_key=key).order_by("-created_at", "-id").first()
print(json.dumps({"call_id": ended.call_id if ended else "", "upstream_id": ended.upstream_id if ended else "", "pk": ended.pk if ended else 0,
                  "api_key": raw}))
"""
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**django_env(database), "PYTHONPATH": str(ROOT)}, check=True,
                         capture_output=True, text=True)  # fmt: skip
    picked: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return picked


def reads(url: str, picked: dict[str, Any], repeat: int, headers: dict[str, str]) -> dict[str, float]:
    figures: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
        first = http.get("/api/realtime/calls").json()
        # A deep page: follow the cursor a few pages in, then time that page.
        cursor = first.get("next_cursor")
        for _ in range(5):
            if not cursor:
                break
            cursor = http.get("/api/realtime/calls", params={"cursor": cursor}).json().get("next_cursor")
        paths: dict[str, tuple[str, dict[str, Any]]] = {
            "GET /stats": ("/api/realtime/stats", {}),
            "GET /calls": ("/api/realtime/calls", {}),
            "GET /calls?status=active": ("/api/realtime/calls", {"status": "active"}),
            "GET /calls?cursor= (7th page)": ("/api/realtime/calls", {"cursor": cursor} if cursor else {}),
            # Wide ranges (a good part of the history matches), newest first.
            "GET /calls?min_duration=300": ("/api/realtime/calls", {"min_duration": 300}),
            "GET /calls?min_cost=0.01": ("/api/realtime/calls", {"min_cost": "0.01"}),
            "GET /calls?caller=+33": ("/api/realtime/calls", {"caller": "+33"}),
        }
        if picked["call_id"]:
            call = picked["call_id"]
            paths["GET /calls/{id}"] = (f"/api/realtime/calls/{call}", {})
            paths["GET /calls/{id}/events"] = (f"/api/realtime/calls/{call}/events", {})
            paths["GET /calls/{id}/transcript"] = (f"/api/realtime/calls/{call}/transcript", {})
        for label, (path, params) in paths.items():
            figures[label] = median_ms(lambda p=path, q=params: http.get(p, params=q).raise_for_status(), repeat)
    with httpx.Client(base_url=url, timeout=120, follow_redirects=True) as admin:
        login = admin.get("/admin/login/")
        admin.post(
            "/admin/login/",
            data={
                "username": "bench",
                "password": "bench-only",
                "csrfmiddlewaretoken": login.cookies.get("csrftoken", ""),
                "next": "/admin/",
            },
            headers={"Referer": f"{url}/admin/login/"},
        )
        pages: dict[str, dict[str, str]] = {
            "admin call list": {},
            "admin list, model filter": {"model": "gpt-realtime-mini"},
            "admin list, status filter": {"status__exact": "active"},
            "admin list, unconfirmed hangups": {"upstream_hangup": "unconfirmed"},
        }
        if picked["call_id"]:
            pages["admin search, full call id"] = {"q": picked["call_id"]}
            pages["admin search, call id prefix"] = {"q": picked["call_id"][:9]}
            pages["admin search, upstream id"] = {"q": picked["upstream_id"]}
            # The short id as the demo page shows it, ellipsis included; a caller number's beginning.
            pages["admin search, short id from the demo page"] = {"q": picked["call_id"][:11] + "…"}
            pages["admin search, caller number"] = {"q": "+3361"}
        for label, params in pages.items():
            figures[label] = median_ms(
                lambda q=params: admin.get("/admin/realtime/call/", params=q).raise_for_status(), max(repeat // 3, 3)
            )
        if picked["call_id"]:
            # The call page: header, conversation, quality, its first events, sessions.
            figures["admin call page"] = median_ms(
                lambda: admin.get(f"/admin/realtime/call/{picked['pk']}/change/").raise_for_status(), max(repeat // 3, 3)
            )
    return figures


async def cycles(url: str, offer: str, pid: int, n: int, headers: dict[str, str]) -> dict[str, float]:
    """Broker CPU per create + DELETE (a subscriber on the list feed), per create alone."""
    import websockets

    ws_url = url.replace("http://", "ws://") + "/ws/realtime/calls"
    async with (
        websockets.connect(ws_url, origin=url, additional_headers=headers) as feed,  # type: ignore[arg-type]
        httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as http,
    ):

        async def drain() -> None:
            while True:
                await feed.recv()

        reader = asyncio.ensure_future(drain())
        for _ in range(3):  # warm
            created = (await http.post("/api/realtime/calls", json={"sdp": offer})).json()
            await http.delete(f"/api/realtime/calls/{created['call_id']}")
        before = cpu_seconds(pid)
        ids = []
        for _ in range(n):
            created = await http.post("/api/realtime/calls", json={"sdp": offer})
            created.raise_for_status()
            ids.append(created.json()["call_id"])
        middle = cpu_seconds(pid)
        for call_id in ids:
            (await http.delete(f"/api/realtime/calls/{call_id}")).raise_for_status()
        await asyncio.sleep(0.5)  # the statistics push after the last change
        after = cpu_seconds(pid)
        reader.cancel()
    return {"broker CPU per create (ms)": (middle - before) / n * 1000, "broker CPU per create + DELETE (ms)": (after - before) / n * 1000}


async def latencies(url: str, engine_url: str, offer: str, n: int, headers: dict[str, str]) -> dict[str, float]:
    """Create latency through the broker vs a direct SDK call to the same engine (one at a time)."""
    import openai

    sdk = openai.AsyncOpenAI(api_key="sk-localrealtime", base_url=f"{engine_url}/v1", max_retries=0)
    session = {"type": "realtime", "model": "gpt-realtime", "audio": {"output": {"voice": "alloy"}}}
    broker, direct = [], []
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as http:
        for i in range(n + 2):
            start = time.perf_counter()
            created = await sdk.realtime.calls.create(sdp=offer, session=session)  # type: ignore[arg-type]
            took_direct = time.perf_counter() - start
            upstream_id = created.response.headers.get("location", "").rsplit("/", 1)[-1]
            await sdk.realtime.calls.hangup(upstream_id)
            start = time.perf_counter()
            response = await http.post("/api/realtime/calls", json={"sdp": offer, "session": {"voice": "alloy"}})
            took_broker = time.perf_counter() - start
            response.raise_for_status()
            await http.delete(f"/api/realtime/calls/{response.json()['call_id']}")
            if i >= 2:
                broker.append(took_broker)
                direct.append(took_direct)
    await sdk.close()
    return {
        "create p50 through the broker (ms)": quantile(broker, 0.5) * 1000,
        "create p50, direct SDK call (ms)": quantile(direct, 0.5) * 1000,
        "overhead p50 (ms)": (quantile(broker, 0.5) - quantile(direct, 0.5)) * 1000,
        "overhead p99 (ms)": (quantile(broker, 0.99) - quantile(direct, 0.99)) * 1000,
    }


PASSES = """
import json, statistics, time
from django.utils import timezone
from realtime import idempotency, retention, services, sweeper
from realtime.models import Call
from realtime.webhooks.models import WebhookMessage
def timed(fn, repeat=REPEAT):
    # Wall time, and this process's CPU time (what a loaded machine does not inflate).
    fn()
    times, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time(); fn()
        times.append(time.perf_counter() - start); cpu.append(time.process_time() - start_cpu)
    return round(statistics.median(times) * 1000, 3), round(statistics.median(cpu) * 1000, 3)
now = timezone.now()
active = Call.objects.filter(status="active").count()
# The seed's active calls began in the ten minutes before it ended: at that time few are due; by
# now, every one of them may be (idle), and a pass reads a batch of them.
seeded = Call.objects.filter(status="active").order_by("-created_at").values_list("created_at", flat=True).first() or now
purge = retention.due("sdp", now=now)
out = {
    "sweeper: calls past a limit (ms)": timed(lambda: sweeper.due_calls(now=now)),
    "sweeper: calls past a limit, at the seed's end (ms)": timed(lambda: sweeper.due_calls(now=seeded)),
    # The query that finds them (claiming changes the history: each claim is a write of its own).
    "sweeper: hangups to retry (ms)": timed(lambda: list(sweeper.due_hangups(now=now).values_list("pk", "hangup_retry_at")[:50])),
    "sweeper: old idempotency keys (ms)": timed(lambda: idempotency.forget_expired(now=now)),
    # A supervisor's tick when it holds nothing new to claim (its calls all held): renew + claim.
    "monitor: renew 100 leases (ms)": timed(lambda: services.monitor_renew(owner="bench", lease_seconds=10, call_ids=list(range(1, 101)))),
    "monitor: calls to claim, first 10 (ms)": timed(lambda: list(Call.objects.filter(status="active", upstream_id__gt="", monitor_lease_until__isnull=True).order_by("monitor_lease_until", "id").values_list("pk", "monitor_owner")[:10])),
    "monitor: expired leases to claim, first 10 (ms)": timed(lambda: list(Call.objects.filter(status="active", upstream_id__gt="", monitor_lease_until__lt=now).order_by("monitor_lease_until", "id").values_list("pk", "monitor_owner")[:10])),
    # The retention purge's next batch (SDP kind), and the webhook dispatcher's candidates.
    "retention: next 100 calls to purge (ms)": timed(lambda: [] if purge is None else list(purge.values_list("pk", flat=True)[:100])),
    "webhooks: deliveries to claim (ms)": timed(lambda: list(WebhookMessage.objects.filter(status="pending", next_attempt_at__lte=now).order_by("next_attempt_at").values_list("pk", "next_attempt_at", "endpoint_id")[:40])),
    "active calls": active,
}
figures = {}
for label, value in out.items():
    if isinstance(value, tuple):
        figures[label], figures[label.replace(" (ms)", " (CPU ms)")] = value
    else:
        figures[label] = value
print(json.dumps(figures))
"""


def passes(database: Database, repeat: int) -> dict[str, float]:
    code = _DJANGO_SETUP + PASSES.replace("REPEAT", str(repeat))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=django_env(database), check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@dataclass
class Broker:
    url: str
    headers: dict[str, str]
    pid: int
    engine_url: str
    picked: dict[str, Any]


@contextmanager
def broker(database: Database, args: argparse.Namespace) -> Iterator[Broker]:
    """A broker server on `database` in front of an engine of its own, both running until the end."""
    picked = prepare(database)
    no_background = {"REALTIME_MONITORS": "off", "LOCALREALTIME_CONNECT_TIMEOUT": "5", **NO_PURGE}
    with ExitStack() as stack:
        pids: list[int] = []
        # The engine as its own process (`manage.py localrealtime`): the broker's CPU is its own.
        engine_v1 = stack.enter_context(engine(no_background))
        # The broker as in production (DEBUG off, an API key on every request), unless --debug.
        settings = {"LOCALREALTIME_ENABLED": "false", "OPENAI_BASE_URL": engine_v1} if args.debug else production_env(engine_v1)
        served = stack.enter_context(
            server(
                {**no_background, **settings},
                database=database,
                on_start=lambda process: pids.append(process.pid),
                api_key=picked["api_key"],
            )
        )
        yield Broker(served.url, served.headers, pids[0], engine_v1.removesuffix("/v1"), picked)


def measure(databases: dict[str, Database], offer: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every figure for each database, their brokers running side by side.

    The CPU and latency figures are the median of `--rounds` rounds that alternate between the
    brokers: a CPU time per request is no steadier than the machine's load (the same broker and
    database gave 21 ms per create + DELETE on the idle machine and 29 ms at load 4.5), so two
    databases measured one after the other, minutes apart, differ by whatever the load did in
    between; alternated rounds share it.
    """
    figures: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        brokers = {name: stack.enter_context(broker(database, args)) for name, database in databases.items()}
        for name, b in brokers.items():
            figures[name] = reads(b.url, b.picked, args.repeat, b.headers)
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in brokers}
        for _ in range(args.rounds):
            for name, b in brokers.items():
                measured = asyncio.run(cycles(b.url, offer, b.pid, args.cycles, b.headers))
                measured |= asyncio.run(latencies(b.url, b.engine_url, offer, args.cycles, b.headers))
                rounds[name].append(measured)
                cpu = measured["broker CPU per create + DELETE (ms)"]
                print(
                    f"round {len(rounds[name])}, {name}: broker CPU per create + DELETE {cpu:.2f} ms; "
                    f"load {os.getloadavg()[0]:.1f}; speed probe {speed_ms():.0f} ms"
                )
        for name, measured_rounds in rounds.items():
            figures[name] |= {label: statistics.median(r[label] for r in measured_rounds) for label in measured_rounds[0]}
    for name, database in databases.items():
        figures[name] |= passes(database, args.repeat)
    return figures


def concurrency(database: Database, offer: str, calls: int) -> dict[str, float]:
    env = {"LOCALREALTIME_ANSWER_DELAY_MS": "500", "LOCALREALTIME_CONNECT_TIMEOUT": "5", "REALTIME_MONITORS": "off", **NO_PURGE}
    with server(env, database=database) as served:
        asyncio.run(burst(served.url, offer, 10))
        total, latencies, statuses = asyncio.run(burst(served.url, offer, calls))
    return {
        f"{calls} concurrent creates, total (s)": total,
        "  p50 (ms)": quantile(latencies, 0.5) * 1000,
        "  p99 (ms)": quantile(latencies, 0.99) * 1000,
        "  errors": sum(1 for s in statuses if s != 201),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="a seeded SQLite file or PostgreSQL URL (bench/seed_scale.py)")
    # Defaults the figures in docs/benchmarks.md used; together they stay under the broker's
    # 600 requests a minute per key (REALTIME_THROTTLE_API_KEY), which more would meet with 429.
    parser.add_argument("--repeat", type=int, default=15, help="requests per read timing (median)")
    parser.add_argument("--cycles", type=int, default=30, help="create + DELETE cycles per round for the CPU figures")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of cycles, alternating between the databases (median)")
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--debug", action="store_true", help="the broker with DEBUG on and in local mode, as `make run`")
    parser.add_argument("--quick", action="store_true", help="seed 2,000 calls into a temporary file; few repetitions")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
    os.environ.setdefault("DEBUG", "true")
    with tempfile.TemporaryDirectory() as tmp:
        given: str | None = args.database
        history: Database | None = None
        empty: Database = Path(tmp) / "empty.sqlite3"
        if given and "://" in given:
            history, empty = given, empty_beside(given)
        elif given:
            history = Path(given)
        if args.quick:
            args.repeat, args.cycles, args.rounds, args.concurrent = 3, 3, 2, 10
            history = Path(tmp) / "history.sqlite3"
            env = django_env(history)
            subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
            subprocess.run([sys.executable, "bench/seed_scale.py", "--quick"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        if history is None:
            parser.error("--database (a seeded file) or --quick")
        offer = asyncio.run(make_offer())
        load, speeds = os.getloadavg(), [speed_ms()]
        print(f"machine: {machine()}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; speed probe {speeds[0]:.0f} ms")
        results = measure({"empty": empty, "history": history}, offer, args)
        results["history"] |= concurrency(history, offer, args.concurrent)
        load = os.getloadavg()
        speeds.append(speed_ms())
        print(f"load average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {speed_note(speeds)}")
    print(f"{'measure':<42} {'empty':>10} {'history':>10} {'ratio':>7}")
    for label, value in results["history"].items():
        base = results["empty"].get(label)
        ratio = f"{value / base:6.2f}x" if base else ""
        print(f"{label:<42} {'' if base is None else f'{base:10.2f}'} {value:10.2f} {ratio:>7}")


if __name__ == "__main__":
    main()
