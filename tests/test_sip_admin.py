"""Support staff and phone calls in the admin: routes (validated like the API), the call's SIP details, the transfer action."""

from __future__ import annotations

import pytest

from realtime import services, sessions
from realtime.models import Call, SipRoute

CHANGELIST = "/admin/realtime/call/"


def _phone_call(suffix: str, *, caller: str = "a") -> Call:
    decision = services.SipDecision(accept=True, session=sessions.parse_session({}))
    call = services.sip_call_receive(
        webhook_id=f"wh_{suffix}", upstream_id=f"rtc_{suffix}", caller=caller, called="+33180000002", headers=[], decision=decision
    )
    assert call is not None
    return call


def _transfer(admin_client, call: Call, target: str) -> str:
    response = admin_client.post(CHANGELIST, {"action": "transfer_calls", "_selected_action": [call.pk], "target_uri": target}, follow=True)
    return response.content.decode()


@pytest.mark.django_db
def test_it_refuses_a_route_whose_session_the_api_would_refuse(admin_client):
    form = {"name": "Bad", "position": 1, "enabled": "on", "action": "accept", "session": '{"voice": "nobody"}', "reject_status": 603}

    response = admin_client.post("/admin/realtime/siproute/add/", form)

    assert response.status_code == 200 and "nobody" in response.content.decode()
    assert not SipRoute.objects.filter(name="Bad").exists()
    form["session"] = '{"voice": "coral", "instructions": "Bonjour"}'
    assert admin_client.post("/admin/realtime/siproute/add/", form).status_code == 302
    assert SipRoute.objects.get(name="Bad").session == {"voice": "coral", "instructions": "Bonjour"}


@pytest.mark.django_db
def test_it_shows_the_caller_as_text_never_as_markup(admin_client):
    call = _phone_call("x", caller="<b>boss</b>")

    page = admin_client.get(f"{CHANGELIST}{call.pk}/change/").content.decode()

    assert "&lt;b&gt;boss&lt;/b&gt;" in page and "<b>boss</b>" not in page


@pytest.mark.django_db
def test_it_asks_for_a_valid_target_before_transferring(admin_client):
    call = _phone_call("y")

    assert "Give a sip: or tel: URI to transfer to." in _transfer(admin_client, call, "not a uri")
    assert call.events.filter(event_type="call.transferred").count() == 0


@pytest.mark.django_db(transaction=True)
def test_it_reports_calls_it_could_not_transfer(admin_client, asgi_server):
    call = _phone_call("z")

    # Still pending (never answered): only an active phone call can be transferred.
    assert "Only an active phone call can be transferred." in _transfer(admin_client, call, "tel:+33123456789")
    assert Call.objects.get(pk=call.pk).transferred_to == ""
