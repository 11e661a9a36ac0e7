"""Support staff in the admin: list, search, audit trail, and the terminate action."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User

from realtime.models import Call, CallEvent

from .factories import end_call, make_call

CHANGELIST = "/admin/realtime/call/"


@pytest.fixture
def staff(db) -> User:
    user = User.objects.create_user("sophie", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_call"), Permission.objects.get(codename="view_callevent"))
    return user


@pytest.fixture
def closer(staff: User) -> User:
    staff.user_permissions.add(Permission.objects.get(codename="end_call"))
    return User.objects.get(pk=staff.pk)


@pytest.mark.django_db(transaction=True)
def test_it_ends_selected_calls_and_reports_ended_and_skipped(client, closer, sdp_offer, pushes, asgi_server):
    live, other, done = make_call(sdp_offer), make_call(sdp_offer), make_call(sdp_offer)
    end_call(done)
    pushes.clear()
    client.force_login(closer)

    response = client.post(CHANGELIST, {"action": "end_calls", "_selected_action": [live.pk, done.pk]}, follow=True)

    assert response.status_code == 200
    assert "1 call ended, 1 skipped (not active)." in [str(m) for m in response.context["messages"]]
    live.refresh_from_db()
    other.refresh_from_db()
    assert (live.status, live.end_reason, other.status) == ("ended", "admin_hangup", "active")
    ended = CallEvent.objects.get(call=live, event_type="call.ended")
    # It should record who ended it.
    assert (ended.actor, ended.data["staff_user"]) == ("admin", "sophie")
    assert CallEvent.objects.filter(call=done, event_type="call.ended").count() == 1
    assert [p["event"]["event_type"] for p in pushes if p["call"]] == ["call.ended"]
    assert asgi_server.engine("GET", f"calls/{live.upstream_id}").json()["hangup_requests"] == 1


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_hides_the_action_from_staff_without_the_end_call_permission(client, staff, sdp_offer):
    call = make_call(sdp_offer)
    client.force_login(staff)

    page = client.get(CHANGELIST)
    attempt = client.post(CHANGELIST, {"action": "end_calls", "_selected_action": [call.pk]})

    assert "end_calls" not in page.content.decode()
    assert attempt.status_code in (200, 302)
    call.refresh_from_db()
    assert call.status == Call.Status.ACTIVE


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_lists_searches_and_shows_the_audit_trail(client, staff, sdp_offer):
    call, other = make_call(sdp_offer, {"voice": "shimmer"}), make_call(sdp_offer)
    client.force_login(staff)

    by_upstream = client.get(CHANGELIST, {"q": call.upstream_id}).content.decode()
    filtered = client.get(CHANGELIST, {"voice": "shimmer"}).content.decode()
    detail = client.get(f"{CHANGELIST}{call.pk}/change/").content.decode()

    assert call.call_id in by_upstream and other.call_id not in by_upstream
    assert call.call_id in filtered and other.call_id not in filtered
    assert "call.created" in detail and "call.answered" in detail


@pytest.mark.django_db
def test_events_cannot_be_added_changed_or_deleted(admin_client):
    assert admin_client.get("/admin/realtime/callevent/add/").status_code == 403
    assert admin_client.get("/admin/realtime/call/add/").status_code == 403
