"""The bench of a call's transitions on PostgreSQL, their statement prepared or not, still runs (its
`--quick` mode, which starts a real PostgreSQL of its own with deploy/servers.py's settings): its
figures in docs/benchmarks.md can be re-made."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def test_it_times_a_calls_transitions_prepared_and_not_on_postgresql():
    result = subprocess.run([sys.executable, "bench/pg_transitions.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "30 calls (open, answer, end, upstream closed) per round, 1 rounds per way, alternated"
    figures = {line[:35].strip(): line[35:].strip() for line in lines[1:]}
    for way in ("prepared", "unprepared"):
        assert all(float(figures[f"{way:10s} {name}"]) > 0 for name in ("open p50 ms", "answer p50 ms", "process CPU ms per call"))
