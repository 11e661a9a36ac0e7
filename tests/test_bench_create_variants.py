"""The bench that compares call setup's CPU and overhead with a variant of the broker still runs (its
`--quick` mode, with both variants bench/_variant_server.py adds for it): its figures in
docs/benchmarks.md can be re-made."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def test_it_measures_the_broker_beside_a_variant():
    # Both of the variants it was written for, in one broker (one run: each starts two servers).
    variant = "sdk-httpx,unprepared"
    command = [sys.executable, "bench/create_variants.py", "--quick", "--variant", variant]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[1:3]] == ["round 1, product", f"round 1, {variant}"]
    # The machine's speed before and after each round, and whether it moved.
    probes = lines[3].removeprefix("machine speed probe (ms, lower is faster): ").split(";")[0].split(", ")
    assert lines[3].startswith("machine speed probe") and len(probes) == 3 and all(float(ms) > 0 for ms in probes)
    table = {line[:40].strip(): line[40:].split() for line in lines[5:]}
    assert all(float(value) > 0 for value in table["broker CPU per create (ms)"])
    assert len(table) == 4
