"""The benchmarks still run (their `--quick` modes): a figure in docs/benchmarks.md can be re-made."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.django_db
def test_it_runs_the_websocket_fan_out_bench(tmp_path):
    result = subprocess.run([sys.executable, "bench/ws_fanout.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=170)

    assert result.returncode == 0, result.stderr[-3000:]
    # One run of 20 subscribers, every one of which received the end of the call.
    assert "20 subscribers in 1 client processes" in result.stdout
    assert result.stdout.splitlines()[-2].split()[:2] == ["1", "20"]
