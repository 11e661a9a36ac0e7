"""The dashboard benchmark in its quick mode: it seeds a history, and times the dashboard for every
period beside an empty database (real processes: the bench starts its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_it_times_the_dashboard_for_every_period_beside_an_empty_database():
    run = subprocess.run([sys.executable, "bench/dashboard.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=900)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "history: 2,000 calls" in run.stdout
    rows = {
        line.split("  ")[0]: line.split() for line in run.stdout.splitlines() if line.startswith(("today", "7 days", "30 days", "31 days"))
    }
    assert set(rows) == {"today", "7 days", "30 days", "31 days to yesterday (custom)"}
    # A month of the 90 seeded days shows about a third of the calls; each period runs the same
    # few queries on both databases.
    assert 500 < int(rows["30 days"][-1].replace(",", "")) < 900
    assert len({row[-2] for row in rows.values()}) == 1
