"""The call list in the admin: compact columns, search by short id, upstream id or caller number,
times to the second, and the events list's headers translated."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone, translation
from django.utils.formats import date_format

from realtime import services, sessions, upstream
from realtime.admin import search_target
from realtime.models import ApiKey, Call, CallEvent

CHANGELIST = "/admin/realtime/call/"


@pytest.fixture
def staff_client(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("sophie", password="pw"))
    return client


def _web_call(upstream_id: str, *, key: ApiKey | None = None) -> Call:
    call = services.call_open(
        offer="v=0", session=sessions.parse_session({}), source=Call.Source.WEBRTC, actor=CallEvent.Actor.API, api_key=key
    )
    services.call_answer(call=call, created=upstream.CreatedCall(upstream_id=upstream_id, sdp_answer="v=0"))
    return call


def _phone_call(suffix: str, caller: str) -> Call:
    decision = services.SipDecision(accept=True, session=sessions.parse_session({}))
    call = services.sip_call_receive(
        webhook_id=f"wh_{suffix}", upstream_id=f"rtc_{suffix}", caller=caller, called="+33180000002", headers=[], decision=decision
    )
    assert call is not None
    return call


def _ids(client: Client, query: dict[str, str]) -> set[str]:
    response = client.get(CHANGELIST, query)
    assert response.status_code == 200
    return {call.call_id for call in response.context["cl"].result_list}


def test_it_shows_short_ids_badges_callers_and_minutes_and_seconds(staff_client, settings):
    settings.LANGUAGE_CODE = "en"
    key = ApiKey(name="Boutique")
    services.api_key_create(key, by=services.SYSTEM)
    web, phone = _web_call("rtc_list1", key=key), _phone_call("list2", "+33612345678")
    services.call_end(call=web, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
    # 3.059057 s: shown as 0:03, never as "3,059057".
    Call.objects.filter(pk=web.pk).update(duration_seconds=3.059057)

    page = staff_client.get(CHANGELIST).content.decode()

    assert f'<span class="call-id" data-copy="{web.call_id}" title="{web.call_id}">{web.call_id[:11]}…</span>' in page
    assert '<span class="badge badge-ended">Ended</span>' in page and '<span class="badge badge-pending">Pending</span>' in page
    assert '<td class="field-caller">Boutique</td>' in page and '<td class="field-caller">+33612345678</td>' in page
    assert '<td class="field-duration">0:03</td>' in page and "3,059057" not in page and "3.059057" not in page
    created = date_format(timezone.localtime(phone.created_at), "SHORT_DATETIME_FORMAT")
    assert created.count(":") == 2 and f'<td class="field-created">{created}</td>' in page


def test_it_finds_a_call_by_the_short_id_the_demo_page_shows(staff_client):
    call, other = _web_call("rtc_short1"), _web_call("rtc_short2")

    # The demo page lists `call_` and six characters, then an ellipsis; copied with it or without.
    for term in (call.call_id[:11] + "…", call.call_id[:11], f"  {call.call_id[:11]}... ", call.call_id[5:13], call.call_id):
        assert _ids(staff_client, {"q": term}) == {call.call_id}, term
    assert _ids(staff_client, {"q": "rtc_short"}) == {call.call_id, other.call_id}
    assert _ids(staff_client, {"q": "rtc_short2"}) == {other.call_id}


def test_it_finds_a_call_by_an_id_beginning_with_digits_unless_a_caller_number_begins_so(staff_client):
    call = _web_call("rtc_digits")
    Call.objects.filter(pk=call.pk).update(call_id="call_12345678" + call.call_id[13:])

    # Digits alone may be a caller number or the start of a call id: no caller, so the call id.
    assert _ids(staff_client, {"q": "12345678"}) == {"call_12345678" + call.call_id[13:]}
    phone = _phone_call("d1", "1234567890")
    assert _ids(staff_client, {"q": "12345678"}) == {phone.call_id}


def test_it_finds_phone_calls_by_caller_number(staff_client):
    mine, other = _phone_call("n1", "+33612345678"), _phone_call("n2", "+33187654321")

    assert _ids(staff_client, {"q": "+33 6 12"}) == {mine.call_id}
    assert _ids(staff_client, {"q": "+331"}) == {other.call_id}
    assert _ids(staff_client, {"q": "tel:+33612345678"}) == {mine.call_id}
    assert _ids(staff_client, {"q": "+3399"}) == set()


def test_search_terms_name_their_column():
    assert search_target("call_1a2b3c…") == ("call_id", "call_1a2b3c")
    assert search_target("1a2b3c") == ("call_id", "call_1a2b3c")
    assert search_target("rtc_x") == ("upstream_id", "rtc_x")
    assert search_target("06 12 34") == ("sip_caller", "061234")
    assert search_target("sip:alice@example.com") == ("sip_caller", "alice")
    assert search_target(" … ") is None and search_target("sip:") is None


def test_the_events_list_headers_are_translated(staff_client):
    call = _web_call("rtc_events")

    with translation.override("fr"):
        page = staff_client.get("/admin/realtime/callevent/", headers={"accept-language": "fr"}).content.decode()

    assert "Appel</a></div>" in page or ">Appel<" in page
    assert f'href="/admin/realtime/call/{call.pk}/change/"' in page


def test_it_brands_the_admin_and_links_the_favicon(staff_client):
    page = staff_client.get("/admin/").content.decode()

    assert "IAPosteManager</a></div>" in page and "Django" not in page.split("<body")[1].split("</header>")[0]
    assert 'rel="icon" href="/static/realtime/favicon.svg"' in page
    assert 'href="/static/realtime/admin.css"' in page


def test_an_event_page_shows_its_data_highlighted(staff_client):
    call = _web_call("rtc_event_page")
    event = CallEvent.objects.get(call=call, event_type="call.answered")

    page = staff_client.get(f"/admin/realtime/callevent/{event.pk}/change/").content.decode()

    assert (
        '<pre class="json">{\n  <span class="jk">&quot;upstream_id&quot;</span>: <span class="js">&quot;rtc_event_page&quot;</span>\n}</pre>'
        in page
    )
    assert f'href="/admin/realtime/call/{call.pk}/change/"' in page
