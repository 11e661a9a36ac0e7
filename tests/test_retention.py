"""Retention of personal data: the purge per kind (background and `manage.py purge_call_data`),
whole calls deleted with statistics kept, redaction of transcripts, and the per-call erase."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from realtime import retention, selectors, services, words
from realtime.models import AccessAudit, Call, CallEvent, CallWord
from realtime.sessions import parse_session
from realtime.webhooks import services as webhook_services
from realtime.webhooks.models import WebhookMessage

from .conftest import ROOT, database_url
from .query_plans import capture, problems
from .test_production_settings import _run

KEEP_ALL = dict.fromkeys((*services.PURGE_KINDS, "calls"))
TRANSCRIPT = "Rappelez-moi au 06 12 34 56 78 ou à jean.dupont@laposte.fr"


@pytest.fixture(autouse=True)
def _keep_all(settings):
    # Each test says which periods run out; everything else is kept.
    settings.REALTIME_RETENTION_DAYS = dict(KEEP_ALL)


def _upstream(kind: str, n: int, **data: Any) -> services.UpstreamEvent:
    return services.UpstreamEvent(kind, f"event_{kind}_{n}", data, timezone.now())


def _ended_call(sdp_offer: str, *, sip: bool = False) -> Call:
    """A call that talked (transcripts, a response with usage, rate limits), then ended."""
    session = parse_session({"instructions": "Vous êtes l'assistant de Mme Martin."})
    if sip:
        call = services.call_open(
            offer="",
            session=session,
            source=Call.Source.SIP,
            actor=CallEvent.Actor.UPSTREAM,
            event_type="call.incoming",
            data={"caller": "+33612345678", "called": "+33180000002"},
            fields={"sip_caller": "+33612345678", "sip_called": "+33180000002", "sip_headers": [{"name": "From", "value": "+33612345678"}]},
        )
    else:
        call = services.call_open(offer=sdp_offer, session=session, source=Call.Source.WEBRTC, actor=CallEvent.Actor.API)
    item = {"id": "item_1", "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": TRANSCRIPT}]}
    usage = {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10}
    services.call_record_events(
        call=call,
        events=[
            _upstream("conversation.item.done", 1, item=item),
            _upstream("conversation.item.input_audio_transcription.completed", 2, item_id="item_1", transcript=TRANSCRIPT),
            _upstream("response.done", 3, response={"id": "resp_1", "status": "completed", "usage": usage, "output": [item]}),
            _upstream("rate_limits.updated", 4, rate_limits=[{"name": "tokens", "remaining": 1000}]),
        ],
    )
    return services.call_end(call=call, reason=Call.EndReason.REMOTE_HANGUP, actor=CallEvent.Actor.UPSTREAM)


def _data(call: Call, event_type: str) -> dict[str, Any]:
    return CallEvent.objects.get(call=call, event_type=event_type).data


def _later(days: int) -> datetime:
    return timezone.now() + timedelta(days=days)


@pytest.mark.django_db
def test_it_purges_the_sdp_once_its_period_has_run_out_with_a_marker_and_one_event(settings, sdp_offer):
    settings.REALTIME_RETENTION_DAYS = {**KEEP_ALL, "sdp": 30}
    call = _ended_call(sdp_offer)
    stats = selectors.stats()
    now = _later(31)

    assert retention.purge_batch(now=_later(29), limit=10).purged == {}
    result = retention.purge_batch(now=now, limit=10)

    assert result.purged == {"sdp": 1}
    call.refresh_from_db()
    marker = f"[purged {now.date().isoformat()}]"
    assert (call.sdp_offer, call.sdp_answer, call.sdp_purged_at) == (marker, "", now)
    # Only its kind: the instructions and the transcript stay until their own periods run out.
    assert call.instructions == "Vous êtes l'assistant de Mme Martin." and call.session_purged_at is None
    assert _data(call, "conversation.item.input_audio_transcription.completed")["transcript"] == TRANSCRIPT
    noted = CallEvent.objects.get(call=call, event_type="call.data_purged")
    assert (noted.actor, noted.data) == ("system", {"kinds": ["sdp"], "marker": marker, "by": "retention"})
    # Statistics count the history: a purge changes none of them.
    assert selectors.stats() == stats
    # Purged once: the next pass finds nothing.
    assert retention.purge_batch(now=now, limit=10).purged == {}
    assert CallEvent.objects.filter(event_type="call.data_purged").count() == 1


@pytest.mark.django_db
def test_it_purges_transcripts_and_speech_keeping_the_usage_then_the_other_events(settings, sdp_offer):
    settings.REALTIME_RETENTION_DAYS = {**KEEP_ALL, "transcripts": 90, "events": 365}
    call = _ended_call(sdp_offer)
    marker = f"[purged {_later(91).date().isoformat()}]"
    assert CallWord.objects.filter(call=call).exists()

    assert retention.purge_batch(now=_later(91), limit=10).purged == {"transcripts": 1}

    # The words said go with the transcript: the call is no longer found by them.
    assert not CallWord.objects.filter(call=call).exists()

    assert _data(call, "conversation.item.done") == {"purged": marker}
    assert _data(call, "conversation.item.input_audio_transcription.completed") == {"purged": marker}
    usage = {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10}
    assert _data(call, "response.done") == {"purged": marker, "response": {"id": "resp_1", "status": "completed", "usage": usage}}
    assert _data(call, "rate_limits.updated") == {"rate_limits": [{"name": "tokens", "remaining": 1000}]}
    assert selectors.call_transcript(call=call) == []
    call.refresh_from_db()
    assert (call.input_tokens, call.output_tokens) == (20, 10)

    later = f"[purged {_later(366).date().isoformat()}]"
    assert retention.purge_batch(now=_later(366), limit=10).purged == {"events": 1}
    assert _data(call, "rate_limits.updated") == {"purged": later}
    # Our own audit events stay as they were.
    assert _data(call, "call.ended")["reason"] == "remote_hangup"


@pytest.mark.django_db
def test_it_purges_caller_numbers_and_session_documents(settings, sdp_offer):
    settings.REALTIME_RETENTION_DAYS = {**KEEP_ALL, "caller_numbers": 90, "session": 90}
    phone = _ended_call(sdp_offer, sip=True)
    web = _ended_call(sdp_offer)
    now = _later(91)
    marker = f"[purged {now.date().isoformat()}]"

    assert retention.purge_batch(now=now, limit=10).purged == {"caller_numbers": 2, "session": 2}

    phone.refresh_from_db()
    assert (phone.sip_caller, phone.sip_called, phone.sip_headers, phone.transferred_to) == (marker, marker, [], "")
    assert _data(phone, "call.incoming")["caller"] == marker and _data(phone, "call.incoming")["called"] == marker
    assert (phone.instructions, phone.session_requested, phone.session_upstream) == (marker, {"purged": marker}, {"purged": marker})
    web.refresh_from_db()
    assert web.sip_caller == ""  # nothing to purge stays empty, not a marker
    assert CallEvent.objects.get(call=phone, event_type="call.data_purged").data["kinds"] == ["session", "caller_numbers"]


@pytest.mark.django_db
def test_it_never_touches_a_live_call(settings, make_call):
    settings.REALTIME_RETENTION_DAYS = {kind: 0 for kind in KEEP_ALL}
    call = make_call()

    assert retention.purge_all(now=_later(1000)).purged == {}
    call.refresh_from_db()
    assert call.sdp_offer.startswith("v=0") and call.sdp_purged_at is None
    assert services.calls_purge_data(kinds_by_call={call.pk: list(services.PURGE_KINDS)}, at=timezone.now()) == {}


@pytest.mark.django_db
def test_it_purges_each_kind_once_when_two_purges_race(sdp_offer):
    call = _ended_call(sdp_offer)
    now = timezone.now()

    first = services.calls_purge_data(kinds_by_call={call.pk: ["sdp", "transcripts"]}, at=now)
    second = services.calls_purge_data(kinds_by_call={call.pk: ["sdp", "transcripts"]}, at=now)

    assert (first, second) == ({call.pk: ["sdp", "transcripts"]}, {})
    assert CallEvent.objects.filter(call=call, event_type="call.data_purged").count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_skips_what_another_purge_holds_and_never_purges_a_kind_twice(sdp_offer):
    """Two purges in two connections: the second, started while the first holds its claim, gets
    nothing (PostgreSQL skips the locked rows at once; SQLite waits for the first's commit), and
    once the first has committed there is nothing left for it either."""
    calls = [_ended_call(sdp_offer) for _ in range(3)]
    kinds_by_call = {c.pk: list(services.PURGE_KINDS) for c in calls}
    now = timezone.now()
    claimed, second_done = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def purge(name: str, hold: bool) -> None:
        try:
            with transaction.atomic():
                results[name] = services.calls_purge_data(kinds_by_call=kinds_by_call, at=now)
                if hold:
                    claimed.set()
                    # PostgreSQL: the second purge ends while this one still holds its rows.
                    results["second_done_while_held"] = second_done.wait(10 if connection.vendor == "postgresql" else 0.5)
        finally:
            if not hold:
                second_done.set()
            connection.close()

    first = threading.Thread(target=purge, args=("first", True))
    first.start()
    assert claimed.wait(10)
    second = threading.Thread(target=purge, args=("second", False))
    second.start()
    first.join(20)
    second.join(20)

    assert results["first"] == kinds_by_call and results["second"] == {}
    assert results["second_done_while_held"] is (connection.vendor == "postgresql")
    assert services.calls_purge_data(kinds_by_call=kinds_by_call, at=now) == {}
    assert CallEvent.objects.filter(event_type="call.data_purged").count() == 3


RACE = """
import json, os, sys, time
import django
django.setup()
from django.utils import timezone
from realtime import retention
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
print(json.dumps(retention.purge_all(now=timezone.now(), limit=2).purged))
"""


def _race(*, calls_days: str) -> dict[str, int]:
    """Two `purge_all`s in two processes started at the same moment (every kind due at once; whole
    calls too if `calls_days`); what they purged, summed."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "iaposte.settings",
        "DEBUG": "true",
        "DATABASE_URL": database_url(),
        **{f"REALTIME_RETAIN_{kind.upper()}_DAYS": "0" for kind in services.PURGE_KINDS},
        "REALTIME_RETAIN_CALLS_DAYS": calls_days,
    }
    start = str(time.time() + 3)  # both past Django's start-up, then purging at the same moment
    processes = [
        subprocess.Popen([sys.executable, "-c", RACE, start], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    totals: dict[str, int] = {}
    for out, _ in outputs:
        for kind, n in json.loads(out.strip().splitlines()[-1]).items():
            totals[kind] = totals.get(kind, 0) + n
    return totals


@pytest.mark.django_db(transaction=True)
def test_it_purges_each_kind_of_each_call_once_when_two_processes_race(sdp_offer):
    calls = [_ended_call(sdp_offer) for _ in range(12)]

    totals = _race(calls_days="")

    assert totals == dict.fromkeys(services.PURGE_KINDS, len(calls))
    # Each kind of each call named by exactly one purge event, whichever process wrote it.
    named = [(e.call_id, kind) for e in CallEvent.objects.filter(event_type="call.data_purged") for kind in e.data["kinds"]]
    assert sorted(named) == sorted((c.pk, kind) for c in calls for kind in services.PURGE_KINDS)
    assert Call.objects.filter(events_purged_at__isnull=True).count() == 0


@pytest.mark.django_db(transaction=True)
def test_it_deletes_each_expired_call_once_when_two_processes_race(sdp_offer):
    calls = [_ended_call(sdp_offer) for _ in range(12)]

    totals = _race(calls_days="0")

    assert totals["calls"] == len(calls)
    assert not Call.objects.exists() and not CallEvent.objects.exists()


@pytest.mark.django_db
def test_it_purges_the_calls_webhook_payloads_with_it_keeping_the_delivery_log(settings, sdp_offer):
    endpoint = webhook_services.endpoint_create(
        url="http://127.0.0.1:9/hooks", events=["call.ended", "call.transcript.completed"], api_key=None
    )
    call = _ended_call(sdp_offer, sip=True)
    messages = WebhookMessage.objects.filter(endpoint=endpoint).order_by("pk")
    assert [m.event_type for m in messages] == ["call.ended", "call.transcript.completed"]
    assert "+33612345678" in json.dumps(messages[0].payload) and "06 12 34 56 78" in json.dumps(messages[1].payload)
    WebhookMessage.objects.filter(pk=messages[0].pk).update(status="delivered")
    settings.REALTIME_RETENTION_DAYS = {**KEEP_ALL, "transcripts": 90}

    assert retention.purge_all(now=_later(91)).purged == {"transcripts": 1}

    marker = services.purge_marker(_later(91))
    for message, status in zip(messages.all(), ["delivered", "pending"], strict=True):
        assert (message.call_id, message.status) == (call.pk, status)
        assert message.payload == {
            "type": message.event_type,
            "timestamp": message.payload["timestamp"],
            "data": {"call_id": call.call_id, "purged": marker},
        }


@pytest.mark.django_db
def test_it_purges_webhook_payloads_of_calls_erased_or_deleted_whole(settings, officer, sdp_offer):
    webhook_services.endpoint_create(url="http://127.0.0.1:9/hooks", events=["call.ended"], api_key=None)
    erased, deleted = _ended_call(sdp_offer, sip=True), _ended_call(sdp_offer, sip=True)
    client = APIClient()
    client.force_login(officer)

    assert client.delete(f"/api/realtime/calls/{erased.call_id}/data").status_code == 200
    settings.REALTIME_RETENTION_DAYS = {**KEEP_ALL, "calls": 730}
    # The erased one goes whole too; its payload was already the marker.
    assert retention.purge_all(now=_later(731)).purged == {"calls": 2}

    payloads = list(WebhookMessage.objects.order_by("pk").values_list("call_id", "payload"))
    assert [(call_id, payload["data"]) for call_id, payload in payloads] == [
        (None, {"call_id": erased.call_id, "purged": services.purge_marker(timezone.now())}),
        (None, {"call_id": deleted.call_id, "purged": services.purge_marker(timezone.now())}),
    ]


@pytest.mark.django_db
def test_it_deletes_expired_calls_whole_and_keeps_the_statistics(settings, sdp_offer):
    settings.REALTIME_RETENTION_DAYS = {**KEEP_ALL, "calls": 730}
    old = _ended_call(sdp_offer)
    kept = _ended_call(sdp_offer)
    stats = selectors.stats()

    result = retention.purge_batch(now=_later(731), limit=1)

    assert result.purged == {"calls": 1}
    assert list(Call.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not CallEvent.objects.filter(call_id=old.pk).exists()
    assert selectors.stats() == stats  # counters count the history, deleted rows included


@pytest.mark.django_db
def test_it_answers_the_purge_queries_from_indexes(settings, sdp_offer):
    settings.REALTIME_RETENTION_DAYS = {**KEEP_ALL, **dict.fromkeys(services.PURGE_KINDS, 30), "calls": 60}
    for sip in (False, True, False):
        _ended_call(sdp_offer, sip=sip)

    with capture() as queries:
        retention.purge_batch(now=_later(31), limit=2)
        retention.purge_batch(now=_later(61), limit=2)
        retention.due_counts(now=_later(61))

    assert problems(queries) == []


@pytest.mark.django_db
def test_it_says_what_it_would_purge_in_a_dry_run_then_purges(settings, sdp_offer):
    settings.REALTIME_RETENTION_DAYS = {**KEEP_ALL, "sdp": 0, "transcripts": 0}
    call = _ended_call(sdp_offer)
    out = StringIO()

    call_command("purge_call_data", "--dry-run", stdout=out)

    lines = out.getvalue().splitlines()
    assert "sdp: 1 calls would be purged (ended more than 0 days ago)" in lines
    assert "transcripts: 1 calls would be purged (ended more than 0 days ago)" in lines
    assert "session: kept forever" in lines and "calls: kept forever" in lines
    call.refresh_from_db()
    assert call.sdp_purged_at is None and not CallEvent.objects.filter(event_type="call.data_purged").exists()

    out = StringIO()
    call_command("purge_call_data", stdout=out)

    assert "sdp: 1 calls purged" in out.getvalue().splitlines()
    call.refresh_from_db()
    assert call.sdp_purged_at is not None and call.transcripts_purged_at is not None


@pytest.mark.django_db(transaction=True)
def test_it_purges_in_the_background_until_nothing_is_due(settings, sdp_offer):
    settings.REALTIME_RETENTION_DAYS = {**KEEP_ALL, "sdp": 0}
    settings.REALTIME_PURGE_BATCH_SIZE = 1
    settings.REALTIME_PURGE_SHARE = 1
    calls = [_ended_call(sdp_offer) for _ in range(3)]

    result = asyncio.run(retention.purge_in_background(asyncio.Event()))

    assert result.purged == {"sdp": 3}
    assert Call.objects.filter(pk__in=[c.pk for c in calls], sdp_purged_at__isnull=False).count() == 3


@pytest.mark.django_db
def test_it_redacts_phone_numbers_and_email_addresses_from_stored_transcripts(settings, sdp_offer):
    settings.REALTIME_REDACT_TRANSCRIPTS = True
    call = _ended_call(sdp_offer)

    stored = _data(call, "conversation.item.input_audio_transcription.completed")
    assert stored["transcript"] == "Rappelez-moi au [phone] ou à [email]"
    assert _data(call, "conversation.item.done")["item"]["content"][0]["transcript"] == "Rappelez-moi au [phone] ou à [email]"
    assert stored["item_id"] == "item_1"
    # Only what was stored is searchable: no digits of the number, no part of the address.
    indexed = set(CallWord.objects.filter(call=call).values_list("word", flat=True))
    assert indexed == set(words.of_texts(["Rappelez-moi au [phone] ou à [email]"]))


@pytest.mark.django_db
def test_it_keeps_transcripts_as_said_without_redaction(sdp_offer):
    call = _ended_call(sdp_offer)

    assert _data(call, "conversation.item.input_audio_transcription.completed")["transcript"] == TRANSCRIPT


# --- per-call erase ---------------------------------------------------------------------------


@pytest.fixture
def officer(django_user_model):
    user = django_user_model.objects.create_user("dpo", "dpo@example.test", "x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=("view_call", "erase_call_data")))
    return user


@pytest.mark.django_db
def test_it_erases_a_calls_data_on_request_audited(settings, officer, sdp_offer):
    settings.REALTIME_LOCAL_MODE = False
    call = _ended_call(sdp_offer, sip=True)
    client = APIClient(REMOTE_ADDR="192.0.2.7")
    client.force_login(officer)
    stats = selectors.stats()

    response = client.delete(f"/api/realtime/calls/{call.call_id}/data")

    assert response.status_code == 200
    kinds = ["sdp", "session", "transcripts", "caller_numbers", "events"]
    assert response.json() == {"success": True, "call_id": call.call_id, "erased": kinds, "message": "Call data erased"}
    call.refresh_from_db()
    assert call.sip_caller.startswith("[purged ") and call.instructions.startswith("[purged ")
    erased = CallEvent.objects.get(call=call, event_type="call.data_erased")
    assert (erased.actor, erased.data["by"], erased.data["kinds"]) == ("admin", "dpo", kinds)
    audit = AccessAudit.objects.get()
    assert (audit.action, audit.actor, audit.user, audit.address, audit.call_ref) == (
        "call_data_erased",
        "dpo",
        officer,
        "192.0.2.7",
        call.call_id,
    )
    assert selectors.stats() == stats
    # Again: nothing left to erase, said so, and audited again (a request was made).
    again = client.delete(f"/api/realtime/calls/{call.call_id}/data")
    assert (again.status_code, again.json()["erased"]) == (200, [])


@pytest.mark.django_db
def test_it_refuses_to_erase_a_live_call(settings, officer, make_call):
    settings.REALTIME_LOCAL_MODE = False
    call = make_call()
    client = APIClient()
    client.force_login(officer)

    response = client.delete(f"/api/realtime/calls/{call.call_id}/data")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "call_not_active"
    assert not AccessAudit.objects.exists() and not CallEvent.objects.filter(event_type="call.data_erased").exists()


@pytest.mark.django_db
def test_it_leaves_erasing_to_staff_with_the_permission(settings, make_key, django_user_model, sdp_offer):
    settings.REALTIME_LOCAL_MODE = False
    call = _ended_call(sdp_offer)
    _, raw = make_key()
    agent = django_user_model.objects.create_user("agent", "a@example.test", "x", is_staff=True)
    agent.user_permissions.set(Permission.objects.filter(codename__in=("view_call", "end_call")))
    staff = APIClient()
    staff.force_login(agent)

    by_key = APIClient().delete(f"/api/realtime/calls/{call.call_id}/data", HTTP_AUTHORIZATION=f"Bearer {raw}")
    by_agent = staff.delete(f"/api/realtime/calls/{call.call_id}/data")
    nobody = APIClient().delete(f"/api/realtime/calls/{call.call_id}/data")

    assert (by_key.status_code, by_agent.status_code, nobody.status_code) == (403, 403, 401)
    assert by_key.json()["error"]["code"] == "permission_denied"
    call.refresh_from_db()
    assert call.sdp_purged_at is None and not AccessAudit.objects.filter(action="call_data_erased").exists()


@pytest.mark.django_db
def test_it_erases_from_the_admin_action(officer, sdp_offer, make_call):
    ended = _ended_call(sdp_offer)
    live = make_call()
    browser = Client(REMOTE_ADDR="192.0.2.8")
    browser.force_login(officer)
    officer.user_permissions.add(Permission.objects.get(codename="change_call"))

    response = browser.post("/admin/realtime/call/", {"action": "erase_call_data", "_selected_action": [ended.pk, live.pk]}, follow=True)

    assert response.status_code == 200
    assert "Data of 1 call erased, 1 skipped (in progress)." in [str(m) for m in response.context["messages"]]
    ended.refresh_from_db()
    assert ended.sdp_purged_at is not None
    assert AccessAudit.objects.get().address == "192.0.2.8"


@pytest.mark.parametrize(("name", "value"), [("REALTIME_RETAIN_SDP_DAYS", "30d"), ("REALTIME_PURGE_SHARE", "0")])
def test_it_refuses_to_start_with_a_bad_retention_setting(tmp_path, name, value):
    result = _run(tmp_path, "manage.py", "check", **{name: value})

    assert result.returncode != 0
    assert f"ImproperlyConfigured: {name} must be" in result.stderr
