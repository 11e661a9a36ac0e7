"""Webhooks over HTTPS: the real dispatcher connects to the address it checked and verifies the
receiver's certificate against the endpoint's host name, trusting the public CAs and the ones of
REALTIME_WEBHOOK_CA_FILE. The receiver is real (TLS on loopback) with certificates made for the
test by a throwaway CA (trustme)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import standardwebhooks
import trustme
from asgiref.sync import async_to_sync

from realtime.webhooks import dispatcher
from realtime.webhooks import services as webhook_services
from realtime.webhooks.models import WebhookEndpoint, WebhookMessage

from .webhook_receiver import Receiver, receiving

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "internal-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def https_receiver(ca: trustme.CA, *names: str) -> Iterator[Receiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    with receiving(tls=context) as receiver:
        yield receiver


@pytest.fixture
def localhost(ca: trustme.CA) -> Iterator[Receiver]:
    yield from https_receiver(ca, "localhost")


@pytest.fixture
def another_name(ca: trustme.CA) -> Iterator[Receiver]:
    yield from https_receiver(ca, "hooks.example.com")


def dispatch() -> int:
    async def once() -> int:
        async with dispatcher.client() as http:
            return await dispatcher.Dispatcher().dispatch_once(http)

    return async_to_sync(once)()


def endpoint_for(receiver: Receiver) -> WebhookEndpoint:
    return webhook_services.endpoint_create(url=receiver.url, events=["call.created"], api_key=None)


def test_it_delivers_over_https_to_a_receiver_whose_certificate_names_the_host(localhost, ca_file, make_call, settings):
    settings.REALTIME_WEBHOOK_CA_FILE = ca_file
    endpoint = endpoint_for(localhost)
    call = make_call()

    assert localhost.url.startswith("https://localhost:")
    assert dispatch() == 1

    [got] = localhost.received
    assert got.headers["host"] == localhost.url.removeprefix("https://").removesuffix("/hooks")
    assert standardwebhooks.Webhook(endpoint.secret).verify(got.body, got.headers) == json.loads(got.body)
    assert json.loads(got.body)["data"]["call_id"] == call.call_id
    message = WebhookMessage.objects.get()
    assert (message.status, message.attempts, message.response_status, message.error) == ("delivered", 1, 200, "")


def test_it_refuses_a_certificate_for_another_name_and_retries(another_name, ca_file, make_call, settings):
    settings.REALTIME_WEBHOOK_CA_FILE = ca_file  # the CA is trusted: only the name is wrong
    endpoint_for(another_name)
    make_call()

    assert dispatch() == 1

    assert another_name.received == []
    message = WebhookMessage.objects.get()
    assert (message.status, message.attempts, message.response_status) == ("pending", 1, None)
    assert message.next_attempt_at > message.last_attempt_at  # retried later
    assert "CERTIFICATE_VERIFY_FAILED" in message.error and "localhost" in message.error


def test_it_refuses_a_certificate_from_a_ca_it_was_not_told_to_trust(localhost, make_call, settings):
    settings.REALTIME_WEBHOOK_CA_FILE = ""  # the public CAs only
    endpoint_for(localhost)
    make_call()

    assert dispatch() == 1

    assert localhost.received == []
    message = WebhookMessage.objects.get()
    assert (message.status, message.attempts) == ("pending", 1)
    assert "CERTIFICATE_VERIFY_FAILED" in message.error and "unable to get local issuer certificate" in message.error
