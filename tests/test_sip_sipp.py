"""Phone calls end to end with SIPp (real SIP software) against the real server's local SIP endpoint.

Needs real servers: `manage.py serve` with the embedded engine (SIP on a loopback port of its own, its
webhooks to our app, monitors on) and the `sipp` binary. Each scenario asserts SIPp's exit code
(0: its call went exactly as scripted) and what the service recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from realtime.models import Call, CallEvent, SipRoute, WebhookDelivery
from tests.conftest import Server
from tests.sip_tools import engine_call, finish, sip_server, sipp, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def sip(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: Any) -> Iterator[tuple[Server, int]]:
    with sip_server(tmp_path_factory.mktemp("sip-server")) as running:
        yield running


@pytest.fixture(autouse=True)
def routes() -> None:
    # Transactional tests empty the tables between tests: every test states its routes.
    SipRoute.objects.all().delete()
    SipRoute.objects.create(name="Sales line busy", position=10, called_pattern="+33180000099", action="reject", reject_status=486)
    SipRoute.objects.create(name="Everything else", position=1000, session={"instructions": "Bonjour", "voice": "marin"})


def _events(call: Call) -> list[str]:
    return list(call.events.order_by("id").values_list("event_type", flat=True))


def _one_call() -> Call:
    return wait_for(lambda: Call.objects.filter(source=Call.Source.SIP).first(), within=20)


def test_it_answers_a_call_echoes_its_audio_records_it_and_ends_it_when_the_caller_hangs_up(sip, tmp_path: Path):
    server, port = sip
    code, output = finish(sipp(port, "uac_accepted.xml", tmp_path), tmp_path)
    assert code == 0, output

    call = wait_for(lambda: Call.objects.filter(source=Call.Source.SIP, status=Call.Status.ENDED).first())
    assert (call.sip_caller, call.sip_called, call.end_reason) == ("+33140000001", "+33180000002", Call.EndReason.REMOTE_HANGUP)
    assert call.sip_route is not None and call.sip_route.name == "Everything else"
    assert {"name": "X-Customer-Id", "value": "4242"} in call.sip_headers
    assert call.voice == "marin" and call.session_upstream["instructions"] == "Bonjour"
    events = _events(call)
    assert events[:2] == ["call.incoming", "call.answered"]
    assert events.count("call.ended") == 1
    # The caller's speech (the pcap) went through voice-activity detection: a turn, then its echo.
    assert "input_audio_buffer.speech_stopped" in events and "response.done" in events
    dtmf = call.events.get(event_type="input_audio_buffer.dtmf_event_received")
    assert dtmf.data["event"] == "5"
    assert call.input_tokens > 0 and call.has_transcript
    media = engine_call(server, call.upstream_id)["sip"]["media"]
    assert media["codec"] == "PCMA" and media["echoed"] > 100 and media["digits"] == "5"
    listed = httpx.get(f"{server.url}/api/realtime/calls", params={"source": "sip"}).json()
    assert listed["count"] == 1 and listed["data"][0]["sip"]["caller"] == "+33140000001"


def test_it_answers_over_tcp_too(sip, tmp_path: Path):
    server, port = sip
    code, output = finish(sipp(port, "uac_accepted.xml", tmp_path, transport="t1"), tmp_path)
    assert code == 0, output
    call = wait_for(lambda: Call.objects.filter(source=Call.Source.SIP, status=Call.Status.ENDED).first())
    assert engine_call(server, call.upstream_id)["sip"]["transport"] == "TCP"


def test_it_rejects_a_call_with_its_routes_status(sip, tmp_path: Path):
    _server, port = sip
    code, output = finish(sipp(port, "uac_rejected.xml", tmp_path, called="+33180000099"), tmp_path)
    assert code == 0, output
    call = _one_call()
    assert (call.status, call.end_reason, call.sip_status) == (Call.Status.ENDED, Call.EndReason.REJECTED, 486)
    assert _events(call) == ["call.incoming", "call.rejected"]
    assert call.events.get(event_type="call.rejected").data == {"status_code": 486, "reason": "route"}


def test_it_records_a_call_missed_when_the_caller_cancels_while_it_rings(sip, tmp_path: Path):
    server, port = sip
    # OpenAI's accept arrives after the caller gave up: it answers 404.
    server.engine("POST", "faults", json={"op": "accept", "delay_ms": 2500})
    code, output = finish(sipp(port, "uac_cancel.xml", tmp_path), tmp_path)
    assert code == 0, output
    call = wait_for(lambda: Call.objects.filter(source=Call.Source.SIP, status=Call.Status.ENDED).first(), within=10)
    assert call.end_reason == Call.EndReason.MISSED
    assert _events(call) == ["call.incoming", "call.ended", "upstream.hangup"]


def test_it_hangs_up_with_a_bye_when_the_call_is_deleted(sip, tmp_path: Path):
    server, port = sip
    caller = sipp(port, "uac_hung_up.xml", tmp_path)
    call = wait_for(lambda: Call.objects.filter(source=Call.Source.SIP, status=Call.Status.ACTIVE).first())
    response = httpx.delete(f"{server.url}/api/realtime/calls/{call.call_id}", timeout=10)
    assert response.status_code == 200
    code, output = finish(caller, tmp_path)
    assert code == 0, output
    call.refresh_from_db()
    assert call.end_reason == Call.EndReason.API_HANGUP
    assert engine_call(server, call.upstream_id)["closed_reason"] == "hangup"


def test_it_transfers_a_call_with_refer_and_follows_the_notify(sip, tmp_path: Path):
    server, port = sip
    caller = sipp(port, "uac_transfer.xml", tmp_path)
    call = wait_for(lambda: Call.objects.filter(source=Call.Source.SIP, status=Call.Status.ACTIVE).first())
    response = httpx.post(f"{server.url}/api/realtime/calls/{call.call_id}/transfer", json={"target_uri": "sip:desk@127.0.0.1"})
    assert response.status_code == 200, response.text
    assert response.json()["call"]["sip"]["transferred_to"] == "sip:desk@127.0.0.1"
    code, output = finish(caller, tmp_path)
    assert code == 0, output
    call = wait_for(lambda: Call.objects.filter(pk=call.pk, status=Call.Status.ENDED).first())
    assert call.end_reason == Call.EndReason.REMOTE_HANGUP
    transferred = call.events.get(event_type="call.transferred")
    assert transferred.data["target_uri"] == "sip:desk@127.0.0.1" and transferred.actor == CallEvent.Actor.API
    assert engine_call(server, call.upstream_id)["sip"]["notifications"] == ["REFER sip:desk@127.0.0.1", "REFER 202", "SIP/2.0 200 OK"]


def test_it_records_a_call_once_when_its_webhook_arrives_twice(sip, tmp_path: Path):
    server, port = sip
    server.engine("POST", "sip", json={"webhook_copies": 2})
    try:
        code, output = finish(sipp(port, "uac_accepted.xml", tmp_path), tmp_path)
    finally:
        server.engine("POST", "sip", json={"webhook_copies": 1})
    assert code == 0, output
    call = wait_for(lambda: Call.objects.filter(source=Call.Source.SIP, status=Call.Status.ENDED).first())
    assert Call.objects.count() == 1 and WebhookDelivery.objects.count() == 1
    assert _events(call).count("call.incoming") == 1
    assert server.engine("GET", "stats").json()["requests"]["accept"] >= 1


def test_it_refuses_a_webhook_with_a_bad_signature_and_the_call_times_out(sip, tmp_path: Path):
    server, port = sip
    server.engine("POST", "sip", json={"webhook_secret": "whsec_bm90LXRoZS1yaWdodC1zZWNyZXQ="})
    try:
        code, output = finish(sipp(port, "uac_unanswered.xml", tmp_path), tmp_path)
    finally:
        from django.conf import settings

        server.engine("POST", "sip", json={"webhook_secret": settings.LOCALREALTIME_WEBHOOK_SECRET})
    assert code == 0, output
    assert not Call.objects.exists() and not WebhookDelivery.objects.exists()
    assert '"POST /api/realtime/sip/webhook" 400' in server.log.read_text()
