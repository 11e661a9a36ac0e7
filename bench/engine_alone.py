"""The local engine alone (`manage.py localrealtime`, OpenAI's stand-in): its CPU and memory per call.

    .venv/bin/python bench/engine_alone.py [--calls 4000] [--rate 50] [--hold 1.0]
    .venv/bin/python bench/engine_alone.py --quick          # the suite runs it

Calls are created and hung up through the `openai` SDK (as the broker makes them), at --rate
calls a second, each held --hold seconds; the offer is a real aiortc peer's, closed before the
run (the engine's ICE checks then meet nobody, as in `bench/scaled.py`'s churn). Printed: the
engine's resident memory after each thousand calls (a process that keeps what its calls leave
grows with them), and its CPU per call (utime + stime from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import cpu_seconds, engine, machine, rss_kib, speed_ms  # noqa: E402
from bench.create_concurrency import make_offer  # noqa: E402

SESSION = {"type": "realtime", "model": "gpt-realtime"}


async def drive(url: str, offer: str, calls: int, rate: float, hold: float) -> None:
    import openai

    sdk = openai.AsyncOpenAI(api_key="sk-localrealtime", base_url=url, max_retries=0, http_client=openai.DefaultAioHttpClient())

    async def one() -> None:
        created = await sdk.realtime.calls.create(sdp=offer, session=SESSION)  # type: ignore[arg-type]
        await asyncio.sleep(hold)
        await sdk.realtime.calls.hangup(created.response.headers["location"].rsplit("/", 1)[-1])

    try:
        tasks = []
        for _ in range(calls):
            tasks.append(asyncio.ensure_future(one()))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
    finally:
        await sdk.close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    offer = await make_offer()
    processes: list[subprocess.Popen[bytes]] = []
    with engine({"LOCALREALTIME_ANSWER_DELAY_MS": "0", "LOG_LEVEL": "WARNING"}, on_start=processes.append) as url:
        pid = processes[0].pid
        rss = [rss_kib(pid) // 1024]
        started = cpu_seconds(pid)
        for done in range(0, args.calls, args.step):
            await drive(url, offer, min(args.step, args.calls - done), args.rate, args.hold)
            rss.append(rss_kib(pid) // 1024)
        cpu = cpu_seconds(pid) - started
    return {
        "calls": args.calls,
        "rate": args.rate,
        "hold_s": args.hold,
        "rss_mib": rss,
        "cpu_ms_per_call": round(cpu / args.calls * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--step", type=int, default=1000, help="calls between two memory readings")
    parser.add_argument("--rate", type=float, default=50.0, help="calls created per second")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds each call is held")
    parser.add_argument("--quick", action="store_true", help="40 calls, read every 20 (the test suite runs it)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.step, args.hold = 40, 20, 0.2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
    os.environ.setdefault("DEBUG", "true")
    print(machine(), f"speed probe {speed_ms()} ms", file=sys.stderr)
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
