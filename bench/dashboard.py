"""The support dashboard's server time against a long history, beside an empty database, in the same
run (see docs/benchmarks.md, "The dashboard").

    DATABASE_URL=sqlite:///big.sqlite3 python manage.py migrate
    DATABASE_URL=sqlite:///big.sqlite3 python bench/seed_scale.py --calls 1000000   # once: minutes
    python bench/dashboard.py --database big.sqlite3 [--repeat 15]
    python bench/dashboard.py --calls 100000   # seeds that many calls into a temporary file first
    python bench/dashboard.py --quick          # 2,000 calls in a temporary file (the suite runs it)

Server time is the view's own, request to response, in one process with the database (Django's
test client, a signed-in staff user: middleware, queries, template, no network), as the median of
`--repeat` requests after one to warm up, for each period: today, 7 days, 30 days and the
31 days to yesterday (the longest custom period). Each database is measured in a process of its own (settings are per database).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import machine  # noqa: E402

PERIODS = {"today": {"period": "today"}, "7 days": {"period": "7d"}, "30 days": {"period": "30d"}, "31 days to yesterday (custom)": None}


def _env(database: Path) -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "iaposte.settings", "DEBUG": "true", "DATABASE_URL": f"sqlite:///{database}"}


def measure(repeat: int) -> dict[str, Any]:
    """In a process whose DATABASE_URL names the database: the dashboard's median time per period."""
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from realtime.models import Call, CallBucket

    user, _ = User.objects.get_or_create(username="dashboard-bench", defaults={"is_staff": True, "is_superuser": True})
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    today = timezone.localdate()
    out: dict[str, Any] = {"calls": Call.objects.count(), "hourly_rows": CallBucket.objects.count(), "periods": {}}
    for label, query in PERIODS.items():
        params = query or {"period": "custom", "start": str(today - timedelta(days=31)), "end": str(today - timedelta(days=1))}
        assert client.get("/admin/dashboard/", params).status_code == 200  # warm: templates, caches
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            response = client.get("/admin/dashboard/", params)
            times.append(time.perf_counter() - began)
            assert response.status_code == 200
        with CaptureQueriesContext(connection) as queries:
            page = client.get("/admin/dashboard/", params).content.decode()
        # The calls the page shows (a localised number: digits only).
        calls = int(re.sub(r"\D", "", re.search(r'id="fig-calls">([^<]*)<', page).group(1)))  # type: ignore[union-attr]
        out["periods"][label] = {"ms": statistics.median(times) * 1000, "queries": len(queries), "calls": calls}
    return out


def run_on(database: Path, repeat: int) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, __file__, "--measure", "--repeat", str(repeat)], cwd=ROOT, env=_env(database), capture_output=True, text=True
    )
    if child.returncode:
        sys.exit(f"measuring {database} failed:\n{child.stderr}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def migrate(database: Path) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=_env(database), check=True)


def seed(database: Path, calls: int) -> float:
    began = time.monotonic()
    subprocess.run([sys.executable, "bench/seed_scale.py", "--calls", str(calls)], cwd=ROOT, env=_env(database), check=True)
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", type=Path, help="a seeded SQLite file (bench/seed_scale.py)")
    parser.add_argument("--calls", type=int, default=100_000, help="without --database: calls to seed into a temporary file")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="2,000 calls, 5 requests per period (for the test suite)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.repeat)))
        return
    if args.quick:
        args.calls, args.repeat, args.database = 2000, 5, None
    print(f"Machine: {machine()}; load average {os.getloadavg()[0]:.2f} at the start")
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        empty = Path(tmp) / "empty.sqlite3"
        migrate(empty)
        database = args.database
        if database is None:
            database = Path(tmp) / "history.sqlite3"
            migrate(database)
            print(f"Seeded {args.calls:,} calls in {seed(database, args.calls):.1f} s")
        baseline, history = run_on(empty, args.repeat), run_on(database, args.repeat)
    print(
        f"\nDashboard server time, median of {args.repeat} (ms); history: {history['calls']:,} calls, {history['hourly_rows']:,} hourly rows"
    )
    print(f"{'period':<30} {'empty':>8} {'history':>9} {'ratio':>6} {'queries':>8} {'calls shown':>12}")
    for label in PERIODS:
        e, h = baseline["periods"][label], history["periods"][label]
        print(f"{label:<30} {e['ms']:>8.1f} {h['ms']:>9.1f} {h['ms'] / e['ms']:>6.2f} {h['queries']:>8} {h['calls']:>12,}")
    print(f"Load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
