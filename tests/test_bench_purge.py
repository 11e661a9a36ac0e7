"""The retention purge bench still runs (its `--quick` mode): its figure in docs/benchmarks.md can be re-made."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def test_it_runs_the_purge_bench_with_live_requests_beside_it():
    result = subprocess.run([sys.executable, "bench/purge.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=400)

    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "2,000 expired calls, 4 clients, 3 s per window, 1 runs" in lines
    # One run: both p99s measured from live requests, and calls purged by the background purge
    # while they ran.
    row = next(line.split() for line in lines if line.startswith("1 "))
    assert float(row[1]) > 0 and float(row[2]) > 0
    assert all(int(n) > 0 for n in row[4].split("+")) and int(row[5]) > 0
    assert lines[-1].startswith("median ratio ")
