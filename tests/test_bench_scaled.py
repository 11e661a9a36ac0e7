"""bench/scaled.py still runs on the real topology (its --quick mode): the figures of the scaled
goals in docs/benchmarks.md can be re-made."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = [pytest.mark.topology, pytest.mark.timeout(400)]


def test_it_runs_every_scenario_of_the_scaled_benchmark():
    result = subprocess.run([sys.executable, "bench/scaled.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=380)

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])["summary"]
    assert report["burst"]["runs"][0]["statuses"] == {"201": 10}
    assert report["churn"]["5xx"] == 0 and report["churn"]["leaked_calls"] == 0 and report["churn"]["transport_errors"] == 0
    assert set(report["churn"]["cpu_ms_per_call"]) == {"web1", "web2", "nginx", "redis", "postgres", "worker", "engine", "client"}
    assert report["churn"]["cpu_ms_per_call"]["web1"] + report["churn"]["cpu_ms_per_call"]["web2"] > 0
    assert report["churn"]["http"] == "lean" and report["churn"]["5xx_errors"] == {}
    assert set(report["churn"]["worker_engine_rss_mib_after"]) == {"worker", "engine"}
    assert all(mib > 0 for mib in report["churn"]["worker_engine_rss_mib_before"].values())
    assert report["speed_probe_ms_before"] > 0 and report["churn"]["speed_probe_ms_after"] > 0
    assert report["burst"]["runs"][0]["cpu_ms_per_create"]["client"] > 0
    assert report["fanout"]["settle_s"] == 0.5
    assert report["body"]["status"] == 413 and report["body"]["others_during"]["failed"] == 0
    assert report["slow"]["opened"] >= 30 and report["slow"]["others_during"]["failed"] == 0
    assert report["fanout"]["subscribers"] == 20 and len(report["fanout"]["runs"]) == 1
    assert set(report["fanout"]["runs"][0]["cpu_ms"]) == {"web1", "web2", "nginx", "redis", "postgres", "worker", "engine"}
    assert report["pgcpu"]["creates"] == 10 and report["pgcpu"]["pool"] is True
    assert report["pgcpu"]["cpu_ms_per_create"]["postgres"] > 0 and report["pgcpu"]["cpu_ms_per_delete"]["postgres"] > 0
