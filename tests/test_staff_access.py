"""Staff: session login, view and end permissions on the API, the admin action and pages, CSRF."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from rest_framework.test import APIClient

from realtime.auth.pages import page_access_required
from realtime.auth.principals import Principal
from realtime.models import Call, CallEvent


@pytest.fixture(autouse=True)
def _production(settings):
    settings.REALTIME_LOCAL_MODE = False


@pytest.fixture
def make_staff(django_user_model):
    def make(username: str = "agent", *perms: str, is_staff: bool = True) -> Any:
        user = django_user_model.objects.create_user(username, f"{username}@example.test", "correct horse", is_staff=is_staff)
        user.user_permissions.set(Permission.objects.filter(content_type__app_label="realtime", codename__in=perms))
        return user

    return make


def _session(user: Any, **kwargs: Any) -> APIClient:
    client = APIClient(**kwargs)
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_it_shows_staff_every_call(make_staff, make_call, make_key):
    key, _ = make_key()
    make_call(api_key=key)
    make_call()

    response = _session(make_staff("agent", "view_call")).get("/api/realtime/calls")

    assert response.status_code == 200
    assert response.json()["count"] == 2


@pytest.mark.parametrize(("username", "perms", "is_staff"), [("noperm", (), True), ("customer", ("view_call", "end_call"), False)])
@pytest.mark.django_db
def test_it_refuses_accounts_that_may_not_view(make_staff, make_call, username, perms, is_staff):
    make_call()

    response = _session(make_staff(username, *perms, is_staff=is_staff)).get("/api/realtime/calls")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.django_db
def test_it_refuses_staff_without_the_end_call_permission(make_staff, make_call):
    call = make_call()

    response = _session(make_staff("viewer", "view_call")).delete(f"/api/realtime/calls/{call.call_id}")

    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Your account lacks the permission realtime.end_call."
    call.refresh_from_db()
    assert call.status == Call.Status.PENDING
    assert not call.events.filter(event_type="call.ended").exists()


@pytest.mark.django_db
def test_it_records_which_staff_member_ended_a_call(make_staff, make_call, make_key, pushes, django_capture_on_commit_callbacks):
    key, _ = make_key()
    call = make_call(api_key=key)
    client = _session(make_staff("supervisor", "view_call", "end_call"))

    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete(f"/api/realtime/calls/{call.call_id}")

    assert response.status_code == 200
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (Call.Status.ENDED, Call.EndReason.ADMIN_HANGUP)
    ended = CallEvent.objects.get(call=call, event_type="call.ended")
    assert ended.actor == CallEvent.Actor.ADMIN
    assert ended.data["staff_user"] == "supervisor"
    assert [p["event"]["event_type"] for p in pushes] == ["call.ended"]


@pytest.mark.django_db
def test_it_refuses_staff_without_the_add_call_permission_to_create(make_staff, sdp_offer):
    response = _session(make_staff("viewer", "view_call", "end_call")).post("/api/realtime/calls", {"sdp": sdp_offer}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Your account lacks the permission realtime.add_call."
    assert not Call.objects.exists()


@pytest.mark.upstream
@pytest.mark.django_db(transaction=True)
def test_it_records_which_staff_member_created_a_call(make_staff, sdp_offer):
    client = _session(make_staff("demo", "view_call", "add_call"))

    response = client.post("/api/realtime/calls", {"sdp": sdp_offer}, format="json")

    assert response.status_code == 201
    call = Call.objects.get(call_id=response.json()["call_id"])
    assert call.api_key is None
    created = call.events.get(event_type="call.created")
    assert (created.actor, created.data["staff_user"]) == (CallEvent.Actor.ADMIN, "demo")


@pytest.mark.django_db
def test_it_requires_the_csrf_token_on_session_writes(make_staff, make_call):
    call = make_call()
    client = _session(make_staff("supervisor", "view_call", "end_call"), enforce_csrf_checks=True)

    refused = client.delete(f"/api/realtime/calls/{call.call_id}")

    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]["message"]
    call.refresh_from_db()
    assert call.status == Call.Status.PENDING

    client.get("/accounts/login/")  # sets the csrftoken cookie, as any page with a form does
    accepted = client.delete(f"/api/realtime/calls/{call.call_id}", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)

    assert accepted.status_code == 200


@pytest.mark.django_db
def test_it_needs_no_csrf_token_with_an_api_key(make_key, make_call):
    key, raw = make_key()
    call = make_call(api_key=key)
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert client.delete(f"/api/realtime/calls/{call.call_id}").status_code == 200


# --- the admin's terminate action -------------------------------------------------------------


def _terminate(client: Any, call: Call) -> Any:
    return client.post("/admin/realtime/call/", {"action": "end_calls", "_selected_action": [call.pk]}, follow=True)


@pytest.mark.django_db
def test_it_hides_the_admin_terminate_action_without_the_permission(client, make_staff, make_call):
    call = make_call()
    client.force_login(make_staff("viewer", "view_call"))

    page = client.get("/admin/realtime/call/")
    response = _terminate(client, call)

    assert page.status_code == 200
    assert b"end_calls" not in page.content
    assert response.status_code == 200
    call.refresh_from_db()
    assert call.status == Call.Status.PENDING
    assert not call.events.filter(event_type="call.ended").exists()


@pytest.mark.django_db
def test_it_ends_calls_from_the_admin_recording_who(client, make_staff, make_call, pushes):
    call = make_call()
    client.force_login(make_staff("supervisor", "view_call", "end_call"))

    response = _terminate(client, call)

    assert response.status_code == 200
    call.refresh_from_db()
    assert call.status == Call.Status.ENDED
    ended = CallEvent.objects.get(call=call, event_type="call.ended")
    assert (ended.actor, ended.data["staff_user"]) == (CallEvent.Actor.ADMIN, "supervisor")


# --- the login page -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
@pytest.mark.django_db
def test_it_serves_one_staff_login_page(client, path):
    response = client.get(path)

    assert response.status_code == 200
    assert "registration/login.html" in [t.name for t in response.templates]
    assert b"Staff sign-in" in response.content
    assert b'name="csrfmiddlewaretoken"' in response.content


@pytest.mark.django_db
def test_it_signs_staff_in(client, make_staff, settings):
    staff = make_staff("agent", "view_call")

    response = client.post("/accounts/login/", {"username": "agent", "password": "correct horse"})

    assert response.status_code == 302
    assert response["Location"] == settings.LOGIN_REDIRECT_URL
    assert int(client.session["_auth_user_id"]) == staff.pk


@pytest.mark.django_db
def test_it_refuses_non_staff_at_the_login_page(client, make_staff):
    make_staff("customer", is_staff=False)

    response = client.post("/accounts/login/", {"username": "customer", "password": "correct horse"})

    assert response.status_code == 200
    assert b"staff account" in response.content
    assert "_auth_user_id" not in client.session


# --- pages (the demo page's rule) -------------------------------------------------------------


@page_access_required
def _page(request: HttpRequest, principal: Principal) -> HttpResponse:
    return HttpResponse(f"{principal.kind} can_end={principal.can_end}")


@pytest.mark.django_db
def test_it_sends_anonymous_visitors_of_a_page_to_the_login(rf: RequestFactory):
    request = rf.get("/realtime-api.html", REMOTE_ADDR="127.0.0.1")
    request.user = _anonymous()

    response = _page(request)

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/realtime-api.html"


@pytest.mark.django_db
def test_it_refuses_a_page_to_staff_without_the_view_permission(rf, make_staff):
    request = rf.get("/realtime-api.html")
    request.user = make_staff("noperm")

    with pytest.raises(PermissionDenied):
        _page(request)


@pytest.mark.parametrize(("perms", "can_end"), [(("view_call",), False), (("view_call", "end_call"), True)])
@pytest.mark.django_db
def test_it_opens_a_page_to_staff_saying_whether_they_may_end_calls(rf, make_staff, perms, can_end):
    request = rf.get("/realtime-api.html")
    request.user = make_staff("agent", *perms)

    assert _page(request).content.decode() == f"staff can_end={can_end}"


@pytest.mark.django_db
def test_it_opens_a_page_to_anyone_on_loopback_in_local_mode(rf, settings):
    settings.REALTIME_LOCAL_MODE = True
    request = rf.get("/realtime-api.html", REMOTE_ADDR="127.0.0.1")
    request.user = _anonymous()

    assert _page(request).content.decode() == "local can_end=True"


def _anonymous() -> Any:
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()
