"""Webhooks out: the real dispatcher sends signed deliveries to a real HTTP receiver on loopback,
retries with backoff (or as Retry-After says), gives up after the window keeping the row,
disables an endpoint that keeps failing, and refuses private addresses at send time."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import openai
import pytest
import standardwebhooks
from asgiref.sync import async_to_sync, sync_to_async
from django.utils import timezone

from realtime import services
from realtime.models import Call, CallEvent
from realtime.webhooks import dispatcher
from realtime.webhooks import services as webhook_services
from realtime.webhooks.models import WebhookEndpoint, WebhookMessage

from .polling import wait_until
from .webhook_receiver import Answer, Receiver, receiving

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    with receiving() as r:
        yield r


def dispatch() -> int:
    """One pass of the real dispatcher (claim what is due, send it, store the outcomes)."""

    async def once() -> int:
        async with dispatcher.client() as http:
            return await dispatcher.Dispatcher().dispatch_once(http)

    return async_to_sync(once)()


def endpoint_for(receiver: Receiver, events: list[str] | None = None, **kwargs) -> WebhookEndpoint:
    return webhook_services.endpoint_create(url=receiver.url, events=events or ["call.created", "call.ended"], api_key=None, **kwargs)


def due_now(message: WebhookMessage) -> None:
    # Time travel by moving the row's own due time back, not the clock.
    WebhookMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())


def test_it_delivers_a_call_event_that_both_verifiers_accept(receiver, make_call):
    endpoint = endpoint_for(receiver)
    call = make_call()

    assert dispatch() == 1

    [got] = receiver.received
    body = json.loads(got.body)
    assert body["type"] == "call.created"
    assert body["data"]["call_id"] == call.call_id and body["data"]["status"] == "pending"
    message = WebhookMessage.objects.get()
    assert got.headers["webhook-id"] == message.message_id
    assert standardwebhooks.Webhook(endpoint.secret).verify(got.body, got.headers) == body
    event = openai.OpenAI(api_key="unused").webhooks.unwrap(got.body.decode(), got.headers, secret=endpoint.secret)
    assert event.type == "call.created"
    message.refresh_from_db()
    assert (message.status, message.attempts, message.response_status, message.next_attempt_at) == ("delivered", 1, 200, None)
    assert message.latency_ms is not None and message.delivered_at is not None


def test_it_keeps_the_webhook_id_across_retries_and_honours_retry_after(receiver, make_call):
    endpoint_for(receiver)
    make_call()
    receiver.answers.append(Answer(status=503, headers={"Retry-After": "120"}))

    dispatch()
    message = WebhookMessage.objects.get()
    assert (message.status, message.attempts, message.response_status, message.error) == ("pending", 1, 503, "HTTP 503")
    wait = (message.next_attempt_at - message.last_attempt_at).total_seconds()
    assert 119 <= wait <= 121
    assert dispatch() == 0  # not due yet

    due_now(message)
    dispatch()
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("delivered", 2)
    assert [r.headers["webhook-id"] for r in receiver.received] == [message.message_id] * 2


def test_it_backs_off_exponentially_with_jitter(receiver, make_call, settings):
    settings.REALTIME_WEBHOOK_RETRY_SECONDS = 10
    endpoint_for(receiver)
    make_call()
    waits = []
    for _ in range(3):
        receiver.answers.append(Answer(status=500))
        dispatch()
        message = WebhookMessage.objects.get()
        waits.append((message.next_attempt_at - message.last_attempt_at).total_seconds())
        due_now(message)
    # Equal jitter: between half and all of 10 s, 20 s, 40 s.
    assert 5 <= waits[0] <= 10 and 10 <= waits[1] <= 20 and 20 <= waits[2] <= 40


def test_it_marks_a_delivery_failed_after_the_window_and_keeps_it(receiver, make_call):
    endpoint_for(receiver)
    call = make_call()
    WebhookMessage.objects.update(give_up_at=timezone.now() + timedelta(seconds=1))
    receiver.answers.append(Answer(status=500))

    dispatch()

    message = WebhookMessage.objects.get()
    assert (message.status, message.attempts, message.next_attempt_at) == ("failed", 1, None)
    # Kept in the log, and "send again" sends it under the same webhook-id.
    assert webhook_services.resend(message=message)
    dispatch()
    message.refresh_from_db()
    assert message.status == "delivered" and len(receiver.received) == 2
    assert json.loads(receiver.received[1].body)["data"]["call_id"] == call.call_id


def test_it_delivers_the_terminal_event_with_its_transcript(receiver, make_call):
    endpoint_for(receiver, events=["call.ended", "call.transcript.completed"])
    call = make_call()
    # Loaded before the transcript was stored (as the API loads a call it ends): the row decides.
    ending = Call.objects.get(pk=call.pk)
    services.call_record_events(
        call=call,
        events=[
            services.UpstreamEvent(
                event_type="conversation.item.done",
                event_id="ev_1",
                data={
                    "item": {
                        "id": "item_1",
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "Bonjour"}],
                    }
                },
                received_at=timezone.now(),
            )
        ],
    )
    services.call_end(call=ending, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)

    assert dispatch() == 2

    [ended] = receiver.of_type("call.ended")
    assert json.loads(ended.body)["data"]["status"] == "ended"
    [transcript] = receiver.of_type("call.transcript.completed")
    data = json.loads(transcript.body)["data"]
    assert data["call_id"] == call.call_id and [e["text"] for e in data["transcript"]] == ["Bonjour"]
    assert data["has_transcript"] is True


def test_it_signs_with_both_secrets_during_a_rotation(receiver, make_call):
    endpoint = endpoint_for(receiver)
    old = endpoint.secret
    webhook_services.endpoint_rotate_secret(endpoint=endpoint, overlap_hours=1)
    make_call()

    dispatch()

    [got] = receiver.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, endpoint.secret):
        standardwebhooks.Webhook(secret).verify(got.body, got.headers)


def test_it_signs_with_the_new_secret_alone_after_the_overlap(receiver, make_call):
    endpoint = endpoint_for(receiver)
    old = endpoint.secret
    webhook_services.endpoint_rotate_secret(endpoint=endpoint, overlap_hours=0)
    make_call()

    dispatch()

    [got] = receiver.received
    standardwebhooks.Webhook(endpoint.secret).verify(got.body, got.headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(old).verify(got.body, got.headers)


def test_it_refuses_a_private_address_at_send_time(receiver, make_call, settings):
    endpoint_for(receiver)
    make_call()
    # The name now resolves to an address the operator does not allow (DNS rebinding, a change of rule).
    settings.REALTIME_WEBHOOK_ALLOWED_NETWORKS = []

    dispatch()

    assert receiver.received == []
    message = WebhookMessage.objects.get()
    assert message.status == "pending" and message.attempts == 1
    assert message.error.startswith("refused: ") and "127.0.0.1" in message.error


def test_it_does_not_follow_redirects(receiver, make_call):
    endpoint_for(receiver)
    make_call()
    receiver.answers.append(Answer(status=302, headers={"Location": receiver.url + "/elsewhere"}))

    dispatch()

    assert [r.path for r in receiver.received] == ["/hooks"]
    message = WebhookMessage.objects.get()
    assert (message.status, message.response_status) == ("pending", 302)


def test_it_gives_up_on_a_receiver_that_does_not_answer_in_time(receiver, make_call, settings):
    settings.REALTIME_WEBHOOK_TIMEOUT_SECONDS = 0.3
    endpoint_for(receiver)
    make_call()
    receiver.answers.append(Answer(delay=2))

    dispatch()

    message = WebhookMessage.objects.get()
    assert (message.status, message.error, message.response_status) == ("pending", "timed out", None)


def test_it_disables_an_endpoint_that_keeps_failing_and_resumes_it_when_enabled(receiver, make_call, settings):
    settings.REALTIME_WEBHOOK_DISABLE_AFTER_FAILURES = 2
    settings.REALTIME_WEBHOOK_DISABLE_AFTER_HOURS = 0
    endpoint = endpoint_for(receiver)
    make_call()
    receiver.answers.extend([Answer(status=500), Answer(status=500)])
    dispatch()
    due_now(WebhookMessage.objects.get())
    dispatch()

    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.failure_streak) == (False, 2)
    assert endpoint.disabled_at is not None and "2 failed attempts" in endpoint.disabled_reason
    # Disabled: no new deliveries are written, and the pending one waits (parked), unsent.
    make_call()
    assert WebhookMessage.objects.count() == 1
    due_now(WebhookMessage.objects.get())
    dispatch()
    message = WebhookMessage.objects.get()
    assert len(receiver.received) == 2 and message.status == "pending" and message.next_attempt_at == message.give_up_at

    webhook_services.endpoint_update(endpoint=endpoint, changes={"enabled": True})
    dispatch()
    message.refresh_from_db()
    endpoint.refresh_from_db()
    assert message.status == "delivered" and (endpoint.enabled, endpoint.failure_streak) == (True, 0)


def test_it_reads_no_more_than_a_few_kib_of_the_answer(receiver, make_call):
    endpoint_for(receiver)
    make_call()
    body = b"x" * 64_000_000
    receiver.answers.append(Answer(status=200, body=body))

    dispatch()

    assert WebhookMessage.objects.get().status == "delivered"
    # The connection was closed after the first KiB: the rest never left (beyond socket buffers).
    assert receiver.sent < len(body) // 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_drains_a_backlog_without_waiting_for_the_next_poll(receiver, settings):
    # A poll far longer than the test: only freed places (and new writes) make it claim again.
    settings.REALTIME_WEBHOOK_POLL_SECONDS = 600
    settings.REALTIME_WEBHOOK_ENDPOINT_CONCURRENCY = 2
    endpoint = await sync_to_async(endpoint_for)(receiver)
    for _ in range(10):
        await sync_to_async(webhook_services.send_test)(endpoint=endpoint)
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        await wait_until(lambda: not WebhookMessage.objects.exclude(status="delivered").exists())
    finally:
        stop.set()
        await running
    assert len(receiver.received) == 10
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 10
