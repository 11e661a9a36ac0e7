"""The outbox: each call event writes one delivery per enabled endpoint that wants it and may see
the call, in the event's own transaction; a dispatcher's claim holds a delivery exactly once, and
one killed mid-claim (a real process, killed) lets another claim it when its lease runs out."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django.utils import timezone

from realtime import services, sessions
from realtime.models import Call, CallEvent
from realtime.webhooks import dispatcher
from realtime.webhooks import services as webhook_services
from realtime.webhooks.models import WebhookMessage

from .conftest import database_url
from .webhook_receiver import receiving

ROOT = Path(__file__).resolve().parent.parent
URL = "http://127.0.0.1:9/hooks"
# Claims and leases, and plans, differ on PostgreSQL: `make test` runs these there too.
pytestmark = pytest.mark.postgresql
ALL = ["call.created", "call.answered", "call.ended", "call.failed", "call.incoming", "call.rejected"]


def _endpoint(events=ALL, api_key=None, url=URL):
    return webhook_services.endpoint_create(url=url, events=list(events), api_key=api_key)


@pytest.mark.django_db
def test_it_writes_one_delivery_per_endpoint_that_wants_the_event_and_sees_the_call(make_key, make_call):
    acme, _ = make_key("acme")
    other, _ = make_key("other")
    everything = _endpoint()
    mine = _endpoint(api_key=acme)
    _endpoint(api_key=other)
    _endpoint(events=["call.failed"])
    off = _endpoint()
    webhook_services.endpoint_update(endpoint=off, changes={"enabled": False})

    call = make_call(api_key=acme)
    services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)

    rows = sorted(WebhookMessage.objects.values_list("event_type", "endpoint_id"))
    assert rows == sorted(
        [("call.created", everything.pk), ("call.created", mine.pk), ("call.ended", everything.pk), ("call.ended", mine.pk)]
    )
    ended = WebhookMessage.objects.filter(event_type="call.ended").first()
    event = CallEvent.objects.get(call=call, event_type="call.ended")
    assert ended.payload == {"type": "call.ended", "timestamp": int(event.created_at.timestamp()), "data": ended.payload["data"]}
    assert ended.payload["data"]["call_id"] == call.call_id and ended.payload["data"]["end_reason"] == "api_hangup"
    assert ended.created_at == event.created_at and ended.give_up_at == event.created_at + timedelta(hours=72)


@pytest.mark.django_db
def test_it_writes_nothing_when_the_event_is_rolled_back(sdp_offer):
    _endpoint()

    with pytest.raises(RuntimeError), transaction.atomic():
        services.call_open(offer=sdp_offer, session=sessions.parse_session({}), source=Call.Source.WEBRTC, actor=CallEvent.Actor.API)
        assert WebhookMessage.objects.count() == 1  # written with the event...
        raise RuntimeError("the process fails before the commit")

    assert not Call.objects.exists() and not WebhookMessage.objects.exists()  # ...and gone with it


@pytest.mark.django_db
def test_it_sends_the_phone_call_events(settings):
    _endpoint()
    decision = services.SipDecision(accept=False, session=sessions.parse_session({}), status=486, reason="route")
    call = services.sip_call_receive(
        webhook_id="wh_1", upstream_id="rtc_sip", caller="+33140000001", called="+3318", headers=[], decision=decision
    )
    assert call is not None
    services.call_reject(call=call, status=486)

    incoming, rejected = WebhookMessage.objects.order_by("id")
    assert (incoming.event_type, rejected.event_type) == ("call.incoming", "call.rejected")
    assert incoming.payload["data"]["sip"]["caller"] == "+33140000001"
    assert rejected.payload["data"]["sip"]["status_code"] == 486 and rejected.payload["data"]["end_reason"] == "rejected"


@pytest.mark.django_db
def test_it_claims_a_delivery_once(make_call, settings):
    _endpoint()
    make_call()
    now = timezone.now()

    first = dispatcher.claim(now=now, limit=10)
    second = dispatcher.claim(now=now, limit=10)

    assert [m.event_type for m in first] == ["call.created"] and second == []
    lease = settings.REALTIME_WEBHOOK_LEASE_SECONDS
    assert first[0].next_attempt_at == now + timedelta(seconds=lease)


@pytest.mark.django_db
def test_it_holds_no_more_than_the_endpoint_concurrency_at_once(make_call, settings):
    settings.REALTIME_WEBHOOK_ENDPOINT_CONCURRENCY = 2
    endpoint = _endpoint()
    other = _endpoint(url="http://127.0.0.1:10/other")
    for _ in range(3):
        make_call()
    now = timezone.now()

    claimed = dispatcher.claim(now=now, limit=10, busy={endpoint.pk: 1})

    assert sorted(m.endpoint_id for m in claimed) == sorted([endpoint.pk, other.pk, other.pk])


CLAIM_AND_DIE = """
import os, django
django.setup()
from django.utils import timezone
from realtime.webhooks import dispatcher
claimed = dispatcher.claim(now=timezone.now(), limit=10)
print(len(claimed), flush=True)
os.kill(os.getpid(), 9)  # killed mid-way: claimed, never sent, never released
"""


@pytest.mark.django_db(transaction=True)
def test_it_lets_another_dispatcher_send_what_a_killed_one_claimed(make_call, settings):
    with receiving() as receiver:
        _endpoint(url=receiver.url)
        call = make_call()
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "iaposte.settings", "DEBUG": "true", "DATABASE_URL": database_url()}

        killed = subprocess.run([sys.executable, "-c", CLAIM_AND_DIE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

        assert killed.returncode == -9 and killed.stdout.strip() == "1"
        message = WebhookMessage.objects.get()
        assert message.status == "pending" and message.attempts == 0 and message.next_attempt_at > timezone.now()
        assert dispatcher.claim(now=timezone.now(), limit=10) == []  # held by the dead one's lease
        # The lease runs out (moved back rather than waiting for it): another dispatcher takes it.
        WebhookMessage.objects.update(next_attempt_at=timezone.now())

        async def send() -> int:
            async with dispatcher.client() as http:
                return await dispatcher.Dispatcher().dispatch_once(http)

        assert async_to_sync(send)() == 1
        message.refresh_from_db()
        assert (message.status, message.attempts) == ("delivered", 1)
        [got] = receiver.received
        assert got.headers["webhook-id"] == message.message_id and call.call_id.encode() in got.body
