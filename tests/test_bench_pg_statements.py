"""The bench of PostgreSQL's work per call transition still runs (its `--quick` mode, which starts a
real PostgreSQL of its own with deploy/servers.py's settings): its figures in docs/benchmarks.md
can be re-made."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def test_it_measures_the_wal_and_times_of_a_calls_writes_on_postgresql():
    result = subprocess.run([sys.executable, "bench/pg_statements.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "100 cycles (INSERT, answer, end, upstream closed) per round, 1 rounds, each after a CHECKPOINT"
    figures = {line[:28].strip(): line[28:].strip() for line in lines[1:]}
    # Four writes, each in its own transaction, each with index entries: dozens of WAL records.
    assert float(figures["WAL records per cycle"]) > 8
    assert float(figures["WAL kB per cycle"]) > 0
    assert all(float(figures[f"{name} median ms"]) > 0 for name in ("insert", "answer", "end", "closed", "commit"))
