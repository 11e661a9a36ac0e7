"""The admin filters calls by end reason, and by whether OpenAI confirmed their hangup."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User

from realtime import services
from realtime.models import Call, CallEvent

from .factories import end_call, make_call

CHANGELIST = "/admin/realtime/call/"


@pytest.fixture
def staff(db) -> User:
    user = User.objects.create_user("sophie", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_call"))
    return user


def _listed(client, query: str) -> set[str]:
    response = client.get(f"{CHANGELIST}?{query}")
    assert response.status_code == 200
    return {call.call_id for call in response.context["cl"].result_list}


@pytest.mark.django_db(transaction=True)
def test_it_filters_by_end_reason_and_unconfirmed_hangup(client, staff, sdp_offer, asgi_server):
    hung_up = end_call(make_call(sdp_offer))
    timed_out = make_call(sdp_offer)
    asgi_server.engine("POST", "faults", json={"op": "hangup", "status": 500})
    async_to_sync(services.call_hangup)(call=timed_out, reason=Call.EndReason.MAX_DURATION, actor=CallEvent.Actor.SYSTEM)
    live = make_call(sdp_offer)
    client.force_login(staff)

    assert _listed(client, "end_reason=max_duration") == {timed_out.call_id}
    assert _listed(client, "end_reason=api_hangup") == {hung_up.call_id}
    assert _listed(client, "upstream_hangup=unconfirmed") == {timed_out.call_id}
    assert _listed(client, "upstream_hangup=confirmed") == {hung_up.call_id}
    assert live.call_id in _listed(client, "")
    page = client.get(f"{CHANGELIST}{timed_out.pk}/change/").content.decode()
    assert "Maximum duration reached" in page and "hangup attempts" in page.lower()
