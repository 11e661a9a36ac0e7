"""The call page in the admin: header, conversation, timeline, quality, sessions, and the end and
transfer buttons (permission, confirmation, one code path through `services`)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from realtime import services, sessions, upstream
from realtime.admin import highlighted_json, minutes_seconds
from realtime.models import Call, CallEvent

from .factories import make_call, measured

CHANGELIST = "/admin/realtime/call/"


def _staff(*codenames: str) -> Client:
    user = User.objects.create_user("sophie", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=("view_call", "view_callevent", *codenames)))
    client = Client()
    client.force_login(user)
    return client


def _answered_call(upstream_id: str = "rtc_page", session: dict | None = None) -> Call:
    """An active call recorded through the services (OpenAI's answer given here: no engine needed)."""
    call = services.call_open(
        offer="v=0", session=sessions.parse_session(session or {}), source=Call.Source.WEBRTC, actor=CallEvent.Actor.API
    )
    services.call_answer(call=call, created=upstream.CreatedCall(upstream_id=upstream_id, sdp_answer="v=0"))
    return call


def _phone_call(suffix: str, *, answered: bool) -> Call:
    decision = services.SipDecision(accept=True, session=sessions.parse_session({}))
    call = services.sip_call_receive(
        webhook_id=f"wh_{suffix}", upstream_id=f"rtc_{suffix}", caller="+33612345678", called="+33180000002", headers=[], decision=decision
    )
    assert call is not None
    if answered:
        services.call_answer(call=call, created=upstream.CreatedCall(upstream_id=call.upstream_id, sdp_answer=""))
    return call


def _turns(call: Call, *, transcribed: bool) -> None:
    user = {"id": "item_u", "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
    assistant = {"id": "item_a", "type": "message", "role": "assistant", "content": [{"type": "output_audio", "transcript": "Bonjour !"}]}
    now = timezone.now()
    events = [
        services.UpstreamEvent("conversation.item.done", "e1", {"item": user}, now),
        services.UpstreamEvent("conversation.item.done", "e2", {"item": assistant}, now),
    ]
    if transcribed:
        events.append(
            services.UpstreamEvent(
                "conversation.item.input_audio_transcription.completed", "e3", {"item_id": "item_u", "transcript": "Allo ?"}, now
            )
        )
    services.call_record_events(call=call, events=events)


@pytest.mark.django_db
def test_it_shows_the_header_conversation_timeline_and_sessions(settings):
    settings.LANGUAGE_CODE = "en"
    call = _answered_call(session={"voice": "echo", "input_audio_transcription": {"model": "whisper-1"}})
    _turns(call, transcribed=True)
    client = _staff()

    page = client.get(f"{CHANGELIST}{call.pk}/change/").content.decode()

    assert '<span class="badge badge-active">Active</span>' in page
    assert f'data-copy="{call.call_id}"' in page and call.call_id[:11] + "…" in page
    # Both sides' words, to the second.
    assert '<span class="who">Caller</span>\n          <span class="text">Allo ?</span>' in page
    assert '<span class="who">Assistant</span>\n          <span class="text">Bonjour !</span>' in page
    answered = CallEvent.objects.get(call=call, event_type="call.answered")
    shown = timezone.localtime(answered.created_at).strftime("%H:%M:%S.") + f"{answered.created_at.microsecond // 1000:03d}"
    # Each event: its time to the millisecond, its type, its actor, its data folded and highlighted.
    assert f'{shown}</time>\n          <span class="type">call.answered</span>' in page
    assert "<details><summary>upstream_id: rtc_page" in page and '<span class="jk">&quot;upstream_id&quot;</span>' in page
    # Requested and sent sessions side by side, and the live page's feed.
    assert "Session requested" in page and "Session sent upstream" in page and "data-live-call" in page
    assert "call.created (" not in page


@pytest.mark.django_db
def test_it_says_when_the_caller_was_not_transcribed_rather_than_leaving_a_blank(settings):
    settings.LANGUAGE_CODE = "en"
    call = _answered_call()
    _turns(call, transcribed=False)

    page = _staff().get(f"{CHANGELIST}{call.pk}/change/").content.decode()

    assert '<span class="untranscribed">(speech, not transcribed: input transcription was off for this call)</span>' in page


@pytest.mark.django_db
def test_it_shows_the_quality_metrics(settings):
    settings.LANGUAGE_CODE = "en"
    call = _answered_call()
    measured(call, turns=3, latency_ms=(412, 880, 910), interruptions=1, talk_seconds=(12.4, 65))

    page = _staff().get(f"{CHANGELIST}{call.pk}/change/").content.decode()

    for label, value in [("Turns", "3"), ("Answer latency, p95", "880 ms"), ("Slowest answer", "910 ms"), ("Assistant talk time", "1:05")]:
        assert f'<tr><th scope="row">{label}</th><td>{value}</td></tr>' in page


@pytest.mark.django_db(transaction=True)
def test_it_ends_the_call_from_its_page_after_a_confirmation(sdp_offer, pushes, asgi_server):
    call = make_call(sdp_offer)
    pushes.clear()
    client = _staff("end_call")

    page = client.get(f"{CHANGELIST}{call.pk}/change/").content.decode()
    confirmation = client.get(f"{CHANGELIST}{call.pk}/end/")

    assert f'href="{CHANGELIST}{call.pk}/end/"' in page
    # Asking is not ending.
    assert confirmation.status_code == 200 and 'id="confirm-end"' in confirmation.content.decode()
    assert Call.objects.get(pk=call.pk).status == Call.Status.ACTIVE and pushes == []

    response = client.post(f"{CHANGELIST}{call.pk}/end/", follow=True)

    assert response.redirect_chain == [(f"{CHANGELIST}{call.pk}/change/", 302)]
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (Call.Status.ENDED, Call.EndReason.ADMIN_HANGUP)
    ended = CallEvent.objects.get(call=call, event_type="call.ended")
    assert (ended.actor, ended.data["staff_user"]) == ("admin", "sophie")
    # One push for the one state change (the upstream hangup's own event is not a lifecycle change).
    assert [(p["event"]["event_type"], p["call"]["status"]) for p in pushes if p["call"]] == [("call.ended", "ended")]
    assert asgi_server.engine("GET", f"calls/{call.upstream_id}").json()["hangup_requests"] == 1
    # Ended: the page no longer offers the button, nor follows the call.
    after = response.content.decode()
    assert 'id="end-call"' not in after and "data-live-call" not in after

    again = client.post(f"{CHANGELIST}{call.pk}/end/", follow=True)
    assert "The call is already ended." in again.content.decode()
    assert CallEvent.objects.filter(call=call, event_type="call.ended").count() == 1


@pytest.mark.django_db
def test_it_offers_no_end_button_and_refuses_without_the_permission():
    call = _answered_call()
    client = _staff()

    page = client.get(f"{CHANGELIST}{call.pk}/change/").content.decode()

    assert 'id="end-call"' not in page
    assert client.get(f"{CHANGELIST}{call.pk}/end/").status_code == 403
    assert client.post(f"{CHANGELIST}{call.pk}/end/").status_code == 403
    assert Call.objects.get(pk=call.pk).status == Call.Status.ACTIVE
    assert not CallEvent.objects.filter(call=call, event_type="call.ended").exists()


@pytest.mark.django_db
def test_it_offers_transfer_only_for_a_live_phone_call_and_with_the_permission():
    phone, web = _phone_call("t1", answered=True), _answered_call()
    allowed, not_allowed = _staff("transfer_call"), Client()
    other = User.objects.create_user("marc", password="pw", is_staff=True)
    other.user_permissions.add(*Permission.objects.filter(codename__in=("view_call", "end_call")))
    not_allowed.force_login(other)

    assert 'id="transfer-call"' in allowed.get(f"{CHANGELIST}{phone.pk}/change/").content.decode()
    assert 'id="transfer-call"' not in allowed.get(f"{CHANGELIST}{web.pk}/change/").content.decode()
    assert 'id="transfer-call"' not in not_allowed.get(f"{CHANGELIST}{phone.pk}/change/").content.decode()
    assert not_allowed.post(f"{CHANGELIST}{phone.pk}/transfer/", {"target_uri": "tel:+33123456789"}).status_code == 403


@pytest.mark.django_db
def test_it_asks_for_a_valid_target_and_refuses_a_call_that_cannot_be_transferred(pushes):
    phone, pending = _phone_call("t2", answered=True), _phone_call("t3", answered=False)
    client = _staff("transfer_call")
    pushes.clear()

    bad = client.post(f"{CHANGELIST}{phone.pk}/transfer/", {"target_uri": "not a uri"})
    refused = client.post(f"{CHANGELIST}{pending.pk}/transfer/", {"target_uri": "tel:+33123456789"}, follow=True)

    assert bad.status_code == 400 and "Give a sip: or tel: URI to transfer to." in bad.content.decode()
    assert "Only an active phone call can be transferred." in refused.content.decode()
    assert not CallEvent.objects.filter(event_type="call.transferred").exists() and pushes == []


def test_durations_read_as_minutes_and_seconds():
    assert [minutes_seconds(s) for s in (None, 0, 3.059057, 59.6, 61, 3600 + 62)] == ["—", "0:00", "0:03", "1:00", "1:01", "1:01:02"]


def test_event_data_is_escaped_and_highlighted():
    shown = highlighted_json({"text": "<b>hi</b> 12", "n": -1.5, "ok": True, "none": None})

    assert '<span class="jk">&quot;text&quot;</span>: <span class="js">&quot;&lt;b&gt;hi&lt;/b&gt; 12&quot;</span>' in shown
    assert '<span class="jn">-1.5</span>' in shown and '<span class="jl">true</span>' in shown and '<span class="jl">null</span>' in shown
