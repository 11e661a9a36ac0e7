"""The scale tools in their quick modes: the seeding tool writes a consistent history, and the
scale benchmark measures every figure against it (real servers: these tests start their own)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _env(database: Path) -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "iaposte.settings", "DEBUG": "true", "DATABASE_URL": f"sqlite:///{database}"}


def test_it_seeds_a_history_whose_figures_equal_a_recount(tmp_path):
    database = tmp_path / "seed.sqlite3"
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=_env(database), check=True)

    run = subprocess.run([sys.executable, "bench/seed_scale.py", "--quick"], cwd=ROOT, env=_env(database), capture_output=True, text=True)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "Wrote 2,000 calls" in run.stdout and "Checked: counters equal a recount" in run.stdout
    with sqlite3.connect(database) as db:
        by_status = dict(db.execute("SELECT status, COUNT(*) FROM realtime_call GROUP BY status").fetchall())
        offer = db.execute("SELECT AVG(LENGTH(sdp_offer)) FROM realtime_call").fetchone()[0]
        events = db.execute("SELECT COUNT(*) FROM realtime_callevent").fetchone()[0]
        keys = db.execute("SELECT COUNT(DISTINCT api_key_id) FROM realtime_call").fetchone()[0]
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    # About 95 % ended, 4 % failed, 1 % active; real-size offers; ten events a call; several keys.
    assert set(by_status) == {"ended", "failed", "active"} and 1800 < by_status["ended"] < 1960
    assert 3000 < offer < 8000
    assert 18_000 < events < 22_000
    assert keys == 5
    assert journal == "wal"


# As long as the run itself may take (two servers, two databases, a few hundred creates): on a
# busy machine that is more than the suite's default 180 s.
@pytest.mark.timeout(900)
def test_it_measures_every_scale_figure_beside_an_empty_database():
    run = subprocess.run([sys.executable, "bench/scale.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=900)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for label in (
        "GET /stats",
        "GET /calls?cursor=",
        "GET /calls/{id}/transcript",
        "admin search, call id prefix",
        "admin search, short id from the demo page",
        "admin search, caller number",
        "admin call page",
        "broker CPU per create + DELETE (ms)",
        "overhead p50 (ms)",
        "sweeper: hangups to retry (ms)",
        "monitor: renew 100 leases (ms)",
        "10 concurrent creates, total (s)",
    ):
        assert label in run.stdout
    # The machine's speed before, at each round and after, to tell a slow spell from a regression.
    assert "machine speed probe (ms, lower is faster): " in run.stdout and run.stdout.count("speed probe") == 2 + 2 * 2
