"""The export and list-filter benchmark in its quick mode (real servers: it starts its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_it_exports_every_seeded_call_and_times_each_filter():
    run = subprocess.run([sys.executable, "bench/export.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=900)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # Every call of each history, once, in each format; the server's peak memory reported.
    assert "| csv: rows | 1,000 | 10,000 |" in run.stdout
    assert "| jsonl: rows | 1,000 | 10,000 |" in run.stdout
    assert "| peak RSS added by the export (MiB) |" in run.stdout
    for label in ("| status=ended |", "| q=call id prefix |", "| ordering=-latency |", "| deep page (cursor, 5th page of 100) |"):
        assert label in run.stdout
