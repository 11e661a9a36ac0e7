"""SIP through the REST API: routes (/api/realtime/sip/routes), transfer, lists by source, and Example 2's SIP offer."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from realtime import services, sessions, sip
from realtime.models import Call, CallEvent, SipRoute

SIP_OFFER = """v=0
o=- 1 1 IN IP4 203.0.113.5
s=-
c=IN IP4 203.0.113.5
t=0 0
m=audio 40000 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
"""


def _phone_call(*, status: str | None = Call.Status.ACTIVE, upstream_id: str = "rtc_phone") -> Call:
    decision = services.SipDecision(accept=True, session=sessions.parse_session({}))
    call = services.sip_call_receive(
        webhook_id=f"wh_{upstream_id}", upstream_id=upstream_id, caller="+33140000001", called="+33180000002", headers=[], decision=decision
    )
    assert call is not None
    if status is not None:
        Call.objects.filter(pk=call.pk).update(status=status)
        call.refresh_from_db()
    return call


@pytest.mark.django_db
def test_it_explains_that_a_sip_offer_belongs_to_the_sip_trunk(api):
    response = api.post("/api/realtime/calls", {"sdp": SIP_OFFER, "session": {}}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "sip_offer_not_supported"
    assert "WebRTC" in error["message"] and "docs/sip.md" in error["message"]
    assert not Call.objects.exists()


@pytest.mark.django_db
def test_it_lists_routes_in_order_and_creates_one_with_a_validated_session(api):
    response = api.post(
        "/api/realtime/sip/routes",
        {"name": "Support FR", "position": 5, "called_pattern": "+331*", "session": {"model": "gpt-4o-realtime-preview", "voice": "alloy"}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    created = response.json()["route"]
    assert (created["name"], created["action"], created["reject_status"]) == ("Support FR", "accept", 603)

    listed = api.get("/api/realtime/sip/routes").json()
    assert [r["name"] for r in listed["data"]] == ["Support FR", "Default: answer every call"] and listed["count"] == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "session": {"voice": "nobody"}}, "session.voice"),
        ({"name": "x", "session": {"temperature": 3}}, "session.temperature"),
        ({"name": "x", "action": "reject", "reject_status": 200}, "reject_status"),
        ({"name": "x", "header_name": "X Bad: header"}, "header_name"),
        ({"name": "x", "session": {"turn_detection": {"type": "server_vad", "threshold": 0.6}}}, "turn_detection.threshold"),
    ],
)
def test_it_refuses_a_route_the_webrtc_endpoint_would_refuse(api, body, field):
    response = api.post("/api/realtime/sip/routes", body, format="json")

    assert response.status_code == 400
    assert field in str(response.json()["error"])
    assert SipRoute.objects.count() == 1  # the default one


@pytest.mark.django_db
def test_it_changes_and_deletes_a_route(api):
    route = SipRoute.objects.get()

    changed = api.patch(f"/api/realtime/sip/routes/{route.pk}", {"action": "reject", "reject_status": 486}, format="json")
    assert changed.status_code == 200 and changed.json()["route"]["reject_status"] == 486
    assert api.delete(f"/api/realtime/sip/routes/{route.pk}").status_code == 200
    assert not SipRoute.objects.exists()


@pytest.mark.django_db
def test_it_keeps_routes_from_api_keys(settings, make_key):
    settings.REALTIME_LOCAL_MODE = False
    _, raw = make_key()
    client = APIClient(headers={"Authorization": f"Bearer {raw}"})

    assert client.get("/api/realtime/sip/routes").status_code == 403
    assert client.post("/api/realtime/sip/routes", {"name": "mine"}, format="json").status_code == 403
    assert APIClient().get("/api/realtime/sip/routes").status_code == 401


@pytest.mark.django_db
def test_it_lets_staff_manage_routes_with_the_model_permissions(settings, django_user_model):
    settings.REALTIME_LOCAL_MODE = False
    user = django_user_model.objects.create_user("ops", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_siproute", "add_siproute"]))
    client = APIClient()
    client.force_login(user)

    assert client.post("/api/realtime/sip/routes", {"name": "night"}, format="json").status_code == 201
    route = SipRoute.objects.get(name="night")
    assert client.delete(f"/api/realtime/sip/routes/{route.pk}").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("route", "caller", "called", "headers", "chosen"),
    [
        ({"called_pattern": "+3318*"}, "+33140000001", "+33180000002", [], True),
        ({"called_pattern": "+3318*"}, "+33140000001", "+33990000002", [], False),
        ({"called_pattern": "sip:support@*"}, "alice", "support", [], True),
        ({"caller_pattern": "+44*"}, "+33140000001", "+33180000002", [], False),
        ({"header_name": "X-Tenant", "header_pattern": "acme"}, "a", "b", [{"name": "x-tenant", "value": "ACME"}], True),
        ({"header_name": "X-Tenant", "header_pattern": "acme"}, "a", "b", [], False),
        ({"enabled": False}, "a", "b", [], False),
    ],
)
def test_it_picks_the_first_matching_route(route, caller, called, headers, chosen):
    first = SipRoute.objects.create(name="first", position=1, **route)
    party = {"+33180000002": sip.party("<sip:+33180000002@h>"), "support": sip.party("<sip:support@pbx.example.com>")}
    decision = sip.decide(
        caller=sip.party(f"<sip:{caller}@h>"), called=party.get(called) or sip.party(f"<sip:{called}@h>"), headers=headers
    )
    assert (decision.route == first) is chosen
    assert decision.accept


@pytest.mark.django_db
def test_it_rejects_with_the_no_route_status_when_nothing_matches(settings):
    SipRoute.objects.all().delete()
    decision = sip.decide(caller=sip.party("x"), called=sip.party("y"), headers=[])
    assert (decision.accept, decision.status, decision.reason) == (False, settings.REALTIME_SIP_NO_ROUTE_STATUS, "no_route")


@pytest.mark.django_db
def test_it_lists_and_counts_calls_by_source(api, make_call):
    make_call()
    _phone_call()

    listed = api.get("/api/realtime/calls", {"source": "sip"}).json()
    assert listed["count"] == 1
    assert listed["data"][0]["sip"] == {
        "caller": "+33140000001",
        "called": "+33180000002",
        "route_id": None,
        "status_code": None,
        "transferred_to": None,
    }
    assert api.get("/api/realtime/calls", {"source": "webrtc"}).json()["data"][0]["sip"] is None
    assert api.get("/api/realtime/stats").json()["stats"]["calls_by_source"] == {"sip": 1, "webrtc": 1}


@pytest.mark.django_db
@pytest.mark.parametrize("target", ["http://example.com", "sip:", "alice", "sip:a@b>", "tel:"])
def test_it_refuses_a_transfer_target_that_is_not_a_sip_or_tel_uri(api, target):
    call = _phone_call()

    response = api.post(f"/api/realtime/calls/{call.call_id}/transfer", {"target_uri": target}, format="json")

    assert response.status_code == 400 and response.json()["error"]["details"]["field"] == "target_uri"
    assert not CallEvent.objects.filter(event_type="call.transferred").exists()


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_transfer_a_webrtc_call_or_an_ended_one(api, make_call):
    webrtc = make_call()
    ended = _phone_call(status=Call.Status.ENDED, upstream_id="rtc_ended")

    for call in (webrtc, ended):
        response = api.post(f"/api/realtime/calls/{call.call_id}/transfer", {"target_uri": "tel:+33123456789"}, format="json")
        assert response.status_code == 409 and response.json()["error"]["code"] == "call_not_active"


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_reports_a_call_gone_upstream_when_transferring(api):
    # The engine does not know rtc_phone: /refer answers 404, the call is over upstream.
    call = _phone_call()

    response = api.post(f"/api/realtime/calls/{call.call_id}/transfer", {"target_uri": "tel:+33123456789"}, format="json")

    assert response.status_code == 409
    assert not CallEvent.objects.filter(event_type="call.transferred").exists()


@pytest.mark.django_db(transaction=True)
def test_it_rejects_a_pending_call_exactly_once(pushes: list[dict[str, Any]]):
    call = _phone_call(status=Call.Status.PENDING)
    pushes.clear()

    assert services.call_reject(call=call, status=486) is True
    assert services.call_reject(call=call, status=603) is False

    call.refresh_from_db()
    assert (call.status, call.end_reason, call.sip_status) == (Call.Status.ENDED, Call.EndReason.REJECTED, 486)
    assert CallEvent.objects.filter(call=call, event_type="call.rejected").count() == 1
    assert [p["event"]["event_type"] for p in pushes] == ["call.rejected"]


@pytest.mark.django_db
def test_it_records_a_call_over_the_limit_as_rejected_busy(settings):
    settings.REALTIME_MAX_ACTIVE_CALLS = 1
    _phone_call(upstream_id="rtc_first")

    second = _phone_call(status=None, upstream_id="rtc_second")

    assert (second.end_reason, second.sip_status) == (Call.EndReason.REJECTED, settings.REALTIME_SIP_BUSY_STATUS)
    assert CallEvent.objects.get(call=second, event_type="call.rejected").data["reason"] == "too_many_calls"


@pytest.mark.parametrize(
    ("header", "uri", "number"),
    [
        ('"Alice" <sip:+33140000001@pstn.example.com:5060>;tag=1', "sip:+33140000001@pstn.example.com", "+33140000001"),
        ("<tel:+33140000001>", "tel:+33140000001", "+33140000001"),
        ("<sip:pbx.example.com>", "sip:pbx.example.com", ""),
        ("not an address <<<", "not an address <<<", ""),
    ],
)
def test_it_reads_caller_and_called_from_sip_headers_as_text(header, uri, number):
    assert sip.party(header) == sip.Party(uri=uri, number=number)
