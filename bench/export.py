"""Finding and exporting calls at scale: the export's peak memory (it must not grow with the
number of calls) and the list's filters, orders and search timed, on histories of several sizes
in the same run (see docs/benchmarks.md, "Finding and exporting calls").

    python bench/export.py                      # 10,000 and 200,000 calls (seeded: minutes)
    python bench/export.py --calls 10000 1000000 --repeat 9
    python bench/export.py --quick              # 1,000 and 10,000 calls (the suite runs it)

For each size: a fresh SQLite database filled by bench/seed_scale.py (the same history as the
scale benchmark, a few events per call), and a real server (`manage.py serve`, uvicorn) on it.
Then, through HTTP as a client sees it:
- the whole export, CSV and JSON lines, streamed to nowhere: rows, megabytes, seconds, and the
  server's peak RSS (VmHWM) before and after: what the export added to the process's peak;
- the median time of the call list with each filter, each order and a deep page (cursor).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import machine, server  # noqa: E402

LIST_QUERIES = [
    ("no filter", {}),
    ("status=ended", {"status": "ended"}),
    ("source=sip", {"source": "sip"}),
    ("model=gpt-realtime-mini", {"model": "gpt-realtime-mini"}),
    ("voice=marin", {"voice": "marin"}),
    ("end_reason=idle_timeout", {"end_reason": "idle_timeout"}),
    ("created_after (last 7 days)", {"created_after": "{week_ago}"}),
    ("created_after + created_before (one day)", {"created_after": "{day_start}", "created_before": "{day_end}"}),
    ("min_duration=300", {"min_duration": 300}),
    ("max_duration=5", {"max_duration": 5}),
    ("min_cost=0.05", {"min_cost": "0.05"}),
    ("caller=+33", {"caller": "+33"}),
    ("q=call id prefix", {"q": "{call_prefix}"}),
    ("q=upstream id prefix", {"q": "rtc_ab"}),
    ("ordering=-duration", {"ordering": "-duration"}),
    ("ordering=cost", {"ordering": "cost"}),
    ("ordering=-latency", {"ordering": "-latency"}),
    ("status=ended&ordering=-cost", {"status": "ended", "ordering": "-cost"}),
    ("voice=marin&ordering=-duration", {"voice": "marin", "ordering": "-duration"}),
    ("deep page (cursor, 5th page of 100)", {"deep": 5}),
]


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def seed(database: Path, calls: int) -> float:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "iaposte.settings", "DEBUG": "true", "DATABASE_URL": f"sqlite:///{database}"}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "bench/seed_scale.py", "--calls", str(calls), "--events-per-call", "2"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def export(client: httpx.Client, pid: int, file_format: str) -> dict[str, Any]:
    before = vm_kib(pid, "VmHWM")
    start = time.perf_counter()
    size = lines = 0
    with client.stream("GET", "/api/realtime/calls/export", params={"format": file_format}) as response:
        assert response.status_code == 200, response.read()[:500]
        for chunk in response.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
    seconds = time.perf_counter() - start
    after = vm_kib(pid, "VmHWM")
    rows = lines - (1 if file_format == "csv" else 0)
    return {"rows": rows, "mb": size / 1e6, "seconds": seconds, "hwm_before": before, "hwm_after": after}


def list_times(client: httpx.Client, repeat: int) -> dict[str, float]:
    now = time.time()
    first = client.get("/api/realtime/calls", params={"limit": 1}).json()["data"]
    fill = {
        "week_ago": str(int(now - 7 * 86400)),
        "day_start": str(int(now - 30 * 86400)),
        "day_end": str(int(now - 29 * 86400)),
        "call_prefix": first[0]["call_id"][:9] if first else "call_0",
    }
    times: dict[str, float] = {}
    for label, params in LIST_QUERIES:
        query = {k: (v.format(**fill) if isinstance(v, str) else v) for k, v in params.items()}
        pages = int(query.pop("deep", 0))

        def once(query: dict[str, Any] = query, pages: int = pages) -> None:
            params = {"limit": 100, **query}
            for _ in range(pages):
                body = client.get("/api/realtime/calls", params=params).json()
                params = {"limit": 100, "cursor": body["next_cursor"]}
            response = client.get("/api/realtime/calls", params={"limit": 20, **query} if not pages else params)
            assert response.status_code == 200, response.text[:300]

        once()
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            once()
            samples.append((time.perf_counter() - start) * 1000 / (pages + 1))
        times[label] = statistics.median(samples)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, nargs="+", default=[10_000, 200_000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 calls, 3 repeats (for the test suite)")
    args = parser.parse_args()
    sizes, repeat = ([1_000, 10_000], 3) if args.quick else (args.calls, args.repeat)

    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.2f} at start")
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            database = Path(tmp) / f"calls-{n}.sqlite3"
            seeded = seed(database, n)
            pids: list[int] = []
            with (
                server(database=database, on_start=lambda p, pids=pids: pids.append(p.pid)) as served,
                httpx.Client(base_url=served.url, timeout=600) as client,
            ):
                pid = pids[0]
                client.get("/api/realtime/calls/export", params={"voice": "none"}).raise_for_status()  # warm
                results[n] = {
                    "seeded_s": seeded,
                    "rss_idle": vm_kib(pid, "VmRSS"),
                    "csv": export(client, pid, "csv"),
                    "jsonl": export(client, pid, "jsonl"),
                    "list": list_times(client, repeat),
                }
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    print()
    header = " | ".join(f"{n:,} calls" for n in sizes)
    print(f"| export | {header} |")
    print("| --- |" + " ---: |" * len(sizes))
    for file_format in ("csv", "jsonl"):
        row = [results[n][file_format] for n in sizes]
        print(f"| {file_format}: rows | " + " | ".join(f"{r['rows']:,}" for r in row) + " |")
        print(f"| {file_format}: size (MB) | " + " | ".join(f"{r['mb']:.1f}" for r in row) + " |")
        print(f"| {file_format}: time (s) | " + " | ".join(f"{r['seconds']:.2f}" for r in row) + " |")
        print(f"| {file_format}: rows/s | " + " | ".join(f"{r['rows'] / r['seconds']:,.0f}" for r in row) + " |")
        print(
            f"| {file_format}: server peak RSS before → after (MiB) | "
            + " | ".join(f"{r['hwm_before'] / 1024:.1f} → {r['hwm_after'] / 1024:.1f}" for r in row)
            + " |"
        )
    growth = [max(results[n][f]["hwm_after"] - results[n][f]["hwm_before"] for f in ("csv", "jsonl")) / 1024 for n in sizes]
    print("| peak RSS added by the export (MiB) | " + " | ".join(f"{g:.1f}" for g in growth) + " |")
    print()
    print(f"| GET /calls (ms, median of {repeat}) | {header} |")
    print("| --- |" + " ---: |" * len(sizes))
    for label, _ in LIST_QUERIES:
        print(f"| {label} | " + " | ".join(f"{results[n]['list'][label]:.1f}" for n in sizes) + " |")


if __name__ == "__main__":
    main()
