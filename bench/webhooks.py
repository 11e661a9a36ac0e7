"""Outgoing webhooks: what the outbox adds to a call's transitions, and how fast one dispatcher
delivers to a receiver on loopback (SQLite, WAL, a fresh database).

1. Transition cost: a call opened, answered and ended through `services` (three events), with no
   webhook endpoint, then with 3 endpoints subscribed to everything (9 outbox rows per call).
   Measured: milliseconds per call (median of the runs).
2. Delivery rate: the backlog those calls left, sent by the production dispatcher (`dispatch_once`
   passes: claim, sign, POST, record) to a real HTTP receiver on loopback answering 200.
   Measured: deliveries per second from the first claim to the last outcome stored.

Usage: python bench/webhooks.py [--calls 200] [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import fresh_database_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one short run (the test suite's)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.runs = 10, 1
    fresh_database_env(REALTIME_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8", REALTIME_MAX_ACTIVE_CALLS="0")
    import django

    django.setup()
    from asgiref.sync import async_to_sync
    from django.core.management import call_command

    from realtime import services, upstream
    from realtime.models import Call, CallEvent
    from realtime.sessions import parse_session
    from realtime.webhooks import dispatcher
    from realtime.webhooks import services as webhook_services
    from realtime.webhooks.models import EventType, WebhookEndpoint, WebhookMessage
    from tests.webhook_receiver import receiving

    call_command("migrate", verbosity=0)
    session = parse_session({})

    def calls(n: int) -> float:
        started = time.perf_counter()
        for i in range(n):
            call = services.call_open(offer="v=0", session=session, source=Call.Source.WEBRTC, actor=CallEvent.Actor.API)
            services.call_answer(call=call, created=upstream.CreatedCall(upstream_id=f"rtc_{i}", sdp_answer="v=0"))
            services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
        return (time.perf_counter() - started) * 1000 / n

    async def drain() -> int:
        sent = 0
        async with dispatcher.client() as http:
            worker = dispatcher.Dispatcher()
            while n := await worker.dispatch_once(http):
                sent += n
        return sent

    bare, hooked, rates = [], [], []
    with receiving() as receiver:
        for _ in range(args.runs):
            WebhookEndpoint.objects.all().delete()
            bare.append(calls(args.calls))
            for _ in range(3):
                webhook_services.endpoint_create(url=receiver.url, events=list(EventType.values), api_key=None)
            hooked.append(calls(args.calls))
            backlog = WebhookMessage.objects.filter(status="pending").count()
            started = time.perf_counter()
            sent = async_to_sync(drain)()
            rates.append(sent / (time.perf_counter() - started))
            assert sent == backlog and not WebhookMessage.objects.filter(status="pending").exists()
        received = len(receiver.received)
    print(f"{args.calls} calls x {args.runs} runs, 3 transitions each; {received} deliveries received")
    print(f"ms per call, no endpoint:     {statistics.median(bare):.2f}")
    print(f"ms per call, 3 endpoints:     {statistics.median(hooked):.2f}")
    print(f"deliveries per second:        {statistics.median(rates):.0f}")


if __name__ == "__main__":
    main()
