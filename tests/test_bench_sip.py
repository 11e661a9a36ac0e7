"""bench/sip.py --quick: the phone-call benchmark still runs and its calls all go through (no timing asserted).

Needs real servers (`manage.py serve`, SIPp)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_it_runs_the_sip_benchmark_in_quick_mode():
    result = subprocess.run([sys.executable, "bench/sip.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 concurrent: 1/1 runs all answered, echoed, recorded and ended" in result.stdout
