"""The benchmarks still run (their `--quick` modes): a figure in docs/benchmarks.md can be re-made."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deploy import servers

from .conftest import ROOT


@pytest.mark.django_db
def test_it_runs_the_websocket_fan_out_bench(tmp_path):
    result = subprocess.run([sys.executable, "bench/ws_fanout.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=170)

    assert result.returncode == 0, result.stderr[-3000:]
    # One run of 20 subscribers, every one of which received the end of the call.
    assert "20 subscribers in 1 client processes" in result.stdout
    assert result.stdout.splitlines()[-2].split()[:2] == ["1", "20"]


def test_it_measures_the_fan_out_parts_alone():
    result = subprocess.run(
        [sys.executable, "bench/ws_fanout.py", "--parts", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    # Four rows (two layers, two encodings), each a figure in milliseconds.
    assert len(rows) == 4 and all(float(row[-1]) >= 0 for row in rows)


def test_it_measures_the_pub_sub_layers_alone_on_a_real_redis(tmp_path):
    redis = servers.start_redis(tmp_path)
    try:
        command = [sys.executable, "bench/ws_fanout.py", "--parts", "--quick", "--redis-url", redis.url]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        redis.stop()

    assert result.returncode == 0, result.stderr[-3000:]
    rows = {" ".join(line.split()[:-1]): float(line.split()[-1]) for line in result.stdout.splitlines()[1:]}
    # The four in-memory rows, then ours and channels_redis' pub/sub layer, each a figure in milliseconds.
    assert len(rows) == 6 and all(figure > 0 for name, figure in rows.items() if "delivery" in name)
    assert {
        "delivery + encoding, realtime.layers.FanOutRedisPubSubChannelLayer",
        "delivery + encoding, channels_redis RedisPubSubChannelLayer",
    } < set(rows)


def test_it_runs_the_webhooks_bench(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    command = [sys.executable, "bench/webhooks.py", "--quick"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    # Its database went with it.
    assert list(tmp_path.iterdir()) == []
    # 10 calls, 3 events each, to 3 endpoints: every delivery arrived.
    assert "90 deliveries received" in result.stdout
    assert float(result.stdout.splitlines()[-1].split()[-1]) > 0


def test_it_measures_the_engine_alone():
    result = subprocess.run([sys.executable, "bench/engine_alone.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    # Its memory at the start and after each 20 calls, and its CPU per call.
    assert report["calls"] == 40 and len(report["rss_mib"]) == 3 and all(mib > 0 for mib in report["rss_mib"])
    assert report["cpu_ms_per_call"] > 0
