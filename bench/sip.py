"""Phone calls against `make run`'s embedded default: decision latency, then concurrent calls with audio.

1. Decision latency: SIPp places brief calls one after another; for each, the engine times its
   `realtime.call.incoming` webhook going out to the broker's accept coming back (webhook
   received -> route matched -> call recorded -> accept sent, plus two loopback HTTP hops).
   Baseline, in the same run: the round trip of a signed webhook the broker ignores (signature
   check only). Goal: p99 < 50 ms.
2. Concurrency: SIPp places N calls at once (G.711 audio from a pcap, a DTMF digit, then BYE).
   Goal for N = 50: all answered, audio echoed, recorded (speech events stored) and ended, 0 errors.

Beside the latencies, each run reports the server's CPU time per brief call (utime + stime from
/proc, which a busy machine does not inflate the way it does wall-clock times) and how many
decisions took more than 50 ms. `--gc-freeze both` runs each measure twice in turn, with the
start-up heap frozen (REALTIME_GC_FREEZE, the default) and without, so both meet the same load.

Usage: python bench/sip.py [--calls 100] [--concurrent 50] [--runs 3] [--monitors embedded|off]
                           [--gc-freeze on|off|both] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import cpu_seconds, free_port, machine, server
from bench._sip import sipp_command

ENGINE_KEY = "sk-localrealtime"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sipp(sip_port: int, scenario: str, *, calls: int, rate: int, workdir: Path) -> tuple[int, str]:
    command = sipp_command(sip_port, scenario, port=free_port(), media_port=free_port())
    command += ["-m", str(calls), "-l", str(calls), "-r", str(rate), "-timeout", "120s", "-trace_stat", "-stf", "stats.csv"]
    result = subprocess.run(command, cwd=workdir, capture_output=True, timeout=180)
    return result.returncode, result.stdout.decode(errors="replace")[-1500:]


def sip_calls(http: httpx.Client, count: int) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    while len(calls) < count:
        page = http.get("/api/realtime/calls", params={"source": "sip", "limit": 100, "offset": len(calls)}).json()["data"]
        if not page:
            break
        calls += page
    return calls[:count]


# The engine's own server (its /v1 base URL), set once the servers are up.
ENGINE_URL = ""


def engine(http: httpx.Client, upstream_id: str) -> dict[str, Any]:
    return http.get(f"{ENGINE_URL}/_local/calls/{upstream_id}", headers={"Authorization": f"Bearer {ENGINE_KEY}"}).json()


def ignored_webhook_ms(http: httpx.Client, secret: str, samples: int) -> list[float]:
    from localrealtime.sip.webhook import sign

    body = json.dumps({"object": "event", "id": "evt_b", "type": "bench.ignored", "created_at": 0, "data": {}}).encode()
    timings = []
    for n in range(samples):
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": f"wh_bench_{n}",
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(secret=secret, webhook_id=f"wh_bench_{n}", timestamp=stamp, body=body),
        }
        start = time.perf_counter()
        response = http.post("/api/realtime/sip/webhook", content=body, headers=headers)
        timings.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.text
    return timings


@dataclass
class Latency:
    p50: float
    p99: float
    over_50ms: int  # decisions that took more than 50 ms
    baseline_p99: float
    cpu_ms_per_call: float  # the server's CPU time during the measured calls, per call
    sipp_exit: int


def latency(url: str, sip_port: int, calls: int, pid: int) -> Latency:
    """Brief calls, 10 a second, then the baseline."""
    from django.conf import settings

    with tempfile.TemporaryDirectory() as workdir, httpx.Client(base_url=url, timeout=30) as http:
        # Warm-up (imports, the SDK client, connection pools): not measured, and older than the rest.
        sipp(sip_port, "uac_brief.xml", calls=3, rate=10, workdir=Path(workdir))
        cpu = cpu_seconds(pid)
        code, output = sipp(sip_port, "uac_brief.xml", calls=calls, rate=10, workdir=Path(workdir))
        cpu = cpu_seconds(pid) - cpu
        if code != 0:
            print(output)
        decisions = [engine(http, c["upstream_id"])["sip"]["decision_ms"] for c in sip_calls(http, calls)]
        decisions = [d for d in decisions if d is not None]
        baseline = ignored_webhook_ms(http, settings.LOCALREALTIME_WEBHOOK_SECRET, calls)
    return Latency(
        p50=quantile(decisions, 0.5),
        p99=quantile(decisions, 0.99),
        over_50ms=sum(d > 50 for d in decisions),
        baseline_p99=quantile(baseline, 0.99),
        cpu_ms_per_call=cpu * 1000 / calls,
        sipp_exit=code,
    )


def concurrency(url: str, sip_port: int, calls: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as workdir, httpx.Client(base_url=url, timeout=30) as http:
        started = time.perf_counter()
        code, output = sipp(sip_port, "uac_accepted.xml", calls=calls, rate=calls, workdir=Path(workdir))
        elapsed = time.perf_counter() - started
        if code != 0:
            print(output)
        deadline = time.monotonic() + 30
        while True:
            rows = sip_calls(http, calls)
            if all(c["status"] == "ended" for c in rows) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        answered = sum(1 for c in rows if c["answered_at"])
        ended = sum(1 for c in rows if c["status"] == "ended" and c["end_reason"] == "remote_hangup")
        echoed = recorded = speech = 0
        for call in rows:
            media = (engine(http, call["upstream_id"]).get("sip") or {}).get("media") or {}
            echoed += media.get("echoed", 0) > 100
            events = http.get(f"/api/realtime/calls/{call['call_id']}/events", params={"limit": 1000}).json()["data"]
            kinds = {e["event_type"] for e in events}
            # Recorded: its lifecycle, and the sideband watched (the monitor joined the call).
            recorded += {"call.incoming", "call.answered", "call.ended", "session.created"} <= kinds
            # The caller's first turn (speech stops 5 s in) was stored: the monitor joined before it.
            speech += "input_audio_buffer.speech_stopped" in kinds
    return {
        "sipp_exit": code,
        "calls": len(rows),
        "answered": answered,
        "echoed": echoed,
        "recorded": recorded,
        "ended": ended,
        "first_turn_recorded": speech,
        "seconds": round(elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help="brief calls for the latency measure")
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few calls, one run")
    parser.add_argument("--monitors", default="embedded", choices=["embedded", "off"], help="off: no sideband writes (latency only)")
    parser.add_argument(
        "--gc-freeze", default="on", choices=["on", "off", "both"], help="REALTIME_GC_FREEZE; both: each run twice, off then on"
    )
    args = parser.parse_args()
    if args.quick:
        args.calls, args.concurrent, args.runs = 10, 3, 1
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()
    print(f"machine: {machine()}; load: {os.getloadavg()[0]:.2f}")
    variants = {"on": ["true"], "off": ["false"], "both": ["false", "true"]}[args.gc_freeze]
    failed = False
    measured: dict[str, list[Latency]] = {v: [] for v in variants}
    results = []
    for _ in range(args.runs):
        for freeze in variants:
            sip_port = free_port()
            env = {"LOCALREALTIME_SIP_PORT": str(sip_port), "REALTIME_MONITORS": args.monitors, "REALTIME_GC_FREEZE": freeze}
            started: list[subprocess.Popen[bytes]] = []
            with server(env, on_start=started.append) as served:
                global ENGINE_URL
                url, ENGINE_URL = served.url, served.engine_url
                deadline = time.monotonic() + 10
                while httpx.post(f"{ENGINE_URL}/_local/sip", json={}, headers={"Authorization": f"Bearer {ENGINE_KEY}"}).status_code != 200:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the SIP endpoint did not start")
                    time.sleep(0.2)
                result = latency(url, sip_port, args.calls, started[0].pid)
                measured[freeze].append(result)
                failed |= result.sipp_exit != 0
                print(
                    f"  gc freeze {freeze}: decision latency: {args.calls} calls, p50 {result.p50:.1f} ms, p99 {result.p99:.1f} ms, "
                    f"{result.over_50ms} over 50 ms; baseline p99 {result.baseline_p99:.1f} ms; "
                    f"server CPU {result.cpu_ms_per_call:.1f} ms per call (SIPp exit {result.sipp_exit}; load {os.getloadavg()[0]:.2f})"
                )
                if args.monitors == "off" or args.concurrent == 0 or freeze != variants[-1]:
                    continue  # the concurrency measure needs monitors to record the calls' events; once per run
                concurrent = concurrency(url, sip_port, args.concurrent)
                results.append(concurrent)
                print(f"  {args.concurrent} concurrent calls: {concurrent}")
                failed |= concurrent["sipp_exit"] != 0
                failed |= any(concurrent[k] != args.concurrent for k in ("calls", "answered", "echoed", "recorded", "ended"))
    for freeze, runs in measured.items():
        print(
            f"median of {args.runs} runs, gc freeze {freeze}: decision p50 {statistics.median(r.p50 for r in runs):.1f} ms, "
            f"p99 {statistics.median(r.p99 for r in runs):.1f} ms (goal < 50 ms), "
            f"over 50 ms {statistics.median(r.over_50ms for r in runs):g} of {args.calls}, "
            f"baseline p99 {statistics.median(r.baseline_p99 for r in runs):.1f} ms, "
            f"server CPU {statistics.median(r.cpu_ms_per_call for r in runs):.1f} ms per call"
        )
    if results:
        print(
            f"{args.concurrent} concurrent: {sum(r['ended'] == args.concurrent for r in results)}/{args.runs} runs "
            "all answered, echoed, recorded and ended"
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
