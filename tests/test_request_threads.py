"""Requests through the ASGI application (realtime/handler.py): Django's middleware hooks run on
the event loop unless they may block, and each request borrows its sync thread from a pool."""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from asgiref.sync import SyncToAsync, sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.core.signals import request_finished, request_started
from django.db import connections

from iaposte.asgi import application
from realtime import services
from realtime.handler import LOOP_HOOKS, RealtimeASGIHandler, RequestThread
from realtime.models import ApiKey, Call, IdempotencyKey

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def _request(method: str, path: str, *, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost"), *(headers or [])],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": body})
    start = await communicator.receive_output(5)
    content = b""
    while True:
        message = await communicator.receive_output(5)
        content += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(5)
    return {"status": start["status"], "headers": start["headers"], "body": content}


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every function sent to a thread with sync_to_async during the test."""
    sent: list[Any] = []
    original = SyncToAsync.__call__

    def record(self: SyncToAsync[Any, Any], *args: Any, **kwargs: Any) -> Any:
        sent.append(self.func)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", record)
    yield sent


def _cookies(response: dict[str, Any]) -> dict[str, str]:
    cookies = {}
    for name, value in response["headers"]:
        if name.lower() == b"set-cookie":
            key, _, rest = value.decode().partition("=")
            cookies[key] = rest.split(";", 1)[0]
    return cookies


async def test_it_runs_no_middleware_hook_in_a_thread_for_an_api_request(settings, hops):
    settings.REALTIME_LOCAL_MODE = True
    response = await _request("GET", "/api/realtime/models")
    assert response["status"] == 200
    headers = {name.lower() for name, _ in response["headers"]}
    # Every hook still ran: the security headers, the CSP, the frame options.
    assert {b"content-security-policy", b"x-content-type-options", b"referrer-policy", b"x-frame-options"} <= headers
    hooked = [fn for fn in hops if type(getattr(fn, "__self__", None)) in LOOP_HOOKS]
    assert hooked == []
    # What remains on the request's thread: the (sync) view with the request_started receivers
    # before it and the rendering of its response after it, and close() (request_finished).
    assert [getattr(fn, "__name__", "") for fn in hops] == ["ModelViewSet", "close"]
    assert json.loads(response["body"])["success"] is True


async def test_it_renders_an_async_views_json_on_the_loop(settings, hops):
    settings.REALTIME_LOCAL_MODE = True
    response = await _request("DELETE", "/api/realtime/calls/call_unknown")
    assert response["status"] == 404
    assert json.loads(response["body"])["error"]["code"] == "call_not_found"
    assert "render" not in [getattr(fn, "__name__", "") for fn in hops]


async def test_it_leaves_a_rendered_response_its_own_render_method(settings):
    settings.REALTIME_LOCAL_MODE = True
    responses: list[Any] = []
    original = RealtimeASGIHandler.run_get_response

    async def keep(self: RealtimeASGIHandler, request: Any) -> Any:
        response = await original(self, request)
        responses.append(response)
        return response

    RealtimeASGIHandler.run_get_response = keep  # type: ignore[method-assign]
    try:
        assert (await _request("GET", "/api/realtime/models"))["status"] == 200
    finally:
        RealtimeASGIHandler.run_get_response = original  # type: ignore[method-assign]
    # The async stand-in Django awaited is gone: the response pickles (the cache middleware's way).
    assert "render" not in vars(responses[0])
    assert pickle.loads(pickle.dumps(responses[0])).content == responses[0].content


async def test_it_sends_the_request_signals_to_a_receiver_of_its_own_as_django_does(settings, hops):
    settings.REALTIME_LOCAL_MODE = True
    seen: list[tuple[str, int]] = []

    def started(**kwargs: Any) -> None:
        seen.append(("started", threading.get_ident()))

    def finished(**kwargs: Any) -> None:
        seen.append(("finished", threading.get_ident()))

    request_started.connect(started)
    request_finished.connect(finished)
    try:
        assert (await _request("GET", "/api/realtime/models"))["status"] == 200
    finally:
        request_started.disconnect(started)
        request_finished.disconnect(finished)
    assert [name for name, _ in seen] == ["started", "finished"]
    assert threading.get_ident() not in {thread for _, thread in seen}
    assert [getattr(fn, "__name__", "") for fn in hops] == ["sync_send", "ModelViewSet", "close"]


async def test_it_runs_the_held_back_request_started_receivers_first_on_the_requests_thread():
    thread = RequestThread()
    ran: list[tuple[str, int]] = []
    thread.started = lambda: ran.append(("started", threading.get_ident()))
    thread.submit(lambda: ran.append(("work", threading.get_ident()))).result()
    thread.submit(lambda: ran.append(("more work", threading.get_ident()))).result()
    thread.shutdown()
    assert [name for name, _ in ran] == ["started", "work", "more work"]
    assert len({ident for _, ident in ran}) == 1
    assert thread.used is True


async def test_it_lends_one_pooled_thread_to_consecutive_requests(settings):
    settings.REALTIME_LOCAL_MODE = True
    threads: list[int] = []

    def finished(**kwargs: Any) -> None:
        threads.append(threading.get_ident())

    request_finished.connect(finished)
    try:
        for _ in range(3):
            assert (await _request("GET", "/api/realtime/models"))["status"] == 200
    finally:
        request_finished.disconnect(finished)
    assert len(threads) == 3
    assert len(set(threads)) == 1
    assert threads[0] != threading.get_ident()


async def test_it_refuses_a_form_post_without_its_csrf_token(hops):
    body = urlencode({"username": "staff", "password": "pw"}).encode()
    response = await _request("POST", "/admin/login/", body=body, headers=[(b"content-type", b"application/x-www-form-urlencoded")])
    assert response["status"] == 403
    # The check reads the form body: that one keeps its thread.
    assert any(getattr(fn, "__name__", "") == "process_view" for fn in hops)


async def test_it_saves_the_session_of_a_sign_in_on_the_thread(hops):
    await User.objects.acreate(username="staff", is_staff=True, password="")
    user = await User.objects.aget(username="staff")
    user.set_password("correct horse battery staple")
    await user.asave()
    page = await _request("GET", "/admin/login/")
    token = _cookies(page)["csrftoken"]
    body = urlencode(
        {"username": "staff", "password": "correct horse battery staple", "csrfmiddlewaretoken": token, "next": "/admin/"}
    ).encode()
    hops.clear()
    response = await _request(
        "POST",
        "/admin/login/",
        body=body,
        headers=[(b"content-type", b"application/x-www-form-urlencoded"), (b"cookie", f"csrftoken={token}".encode())],
    )
    assert response["status"] == 302
    session_key = _cookies(response)["sessionid"]
    assert await Session.objects.filter(session_key=session_key).aexists()
    assert any(getattr(fn, "__qualname__", "") == "SessionMiddleware.process_response" for fn in hops)


async def test_it_checks_an_api_key_request_off_its_thread_and_refuses_a_revoked_key_at_once(settings, hops):
    settings.REALTIME_LOCAL_MODE = False
    settings.REALTIME_DB_THREAD = True
    key = ApiKey(name="crm")
    raw = await sync_to_async(services.api_key_create)(key, by=services.SYSTEM)
    authorization = [(b"authorization", f"Bearer {raw}".encode())]
    hops.clear()

    try:
        response = await _request("DELETE", "/api/realtime/calls/call_unknown", headers=authorization)
        ran = [getattr(fn, "__name__", "") for fn in hops]
    finally:
        # The database thread outlives the test: its connection must not.
        await services.in_db_thread(connections.close_all)()

    assert response["status"] == 404
    assert json.loads(response["body"])["error"]["code"] == "call_not_found"
    # The key read and the call's lookup in one trip to the database thread, the 404's log line on
    # Django's own pool; nothing on the request's thread, so no hop for the request signals either.
    assert ran == ["run", "log_response"]

    await sync_to_async(services.api_key_revoke)(ApiKey.objects.filter(pk=key.pk), by=services.SYSTEM)
    try:
        french = [*authorization, (b"accept-language", b"fr")]
        response = await _request("DELETE", "/api/realtime/calls/call_unknown", headers=french)
    finally:
        await services.in_db_thread(connections.close_all)()

    assert response["status"] == 401
    # Refused at once, in the request's language though the key was read on another thread.
    assert json.loads(response["body"])["error"] == {
        "code": "authentication_failed",
        "message": "Cette clé d’API a été révoquée.",
        "details": {},
    }
    assert {name.lower(): value for name, value in response["headers"]}[b"www-authenticate"] == b'Bearer realm="api"'


@pytest.mark.upstream
async def test_it_checks_a_local_mode_create_without_credentials_off_its_thread(settings, hops, sdp_offer):
    settings.REALTIME_LOCAL_MODE = True
    settings.REALTIME_DB_THREAD = True
    content = json.dumps({"sdp": sdp_offer}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    hops.clear()

    try:
        response = await _request("POST", "/api/realtime/calls", body=content, headers=headers)
        ran = [getattr(fn, "__name__", "") for fn in hops]
    finally:
        await services.in_db_thread(connections.close_all)()

    assert response["status"] == 201, response["body"]
    call = await Call.objects.aget(call_id=json.loads(response["body"])["call_id"])
    assert (call.status, call.api_key_id) == (Call.Status.ACTIVE, None)
    # The call recorded, then its answer: nothing on the request's own thread.
    assert ran == ["run", "run"]


async def test_it_checks_a_request_with_a_session_cookie_on_its_thread(settings, hops):
    settings.REALTIME_LOCAL_MODE = True
    hops.clear()

    try:
        response = await _request("DELETE", "/api/realtime/calls/call_unknown", headers=[(b"cookie", b"sessionid=unknown")])
    finally:
        await services.in_db_thread(connections.close_all)()

    assert response["status"] == 404
    # The session is read from the database, on the request's thread, with the checks.
    assert [getattr(fn, "__name__", "") for fn in hops][:1] == ["initial"]


async def _api_key_request(
    path: str, raw: str, body: dict[str, Any], hops: list[Any] | None = None, headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    """The response, and in `ran` the names of the functions it sent to threads."""
    content = json.dumps(body).encode()
    headers = [
        (b"authorization", f"Bearer {raw}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        *(headers or []),
    ]
    try:
        response = await _request("POST", path, body=content, headers=headers)
        return {**response, "ran": [getattr(fn, "__name__", "") for fn in hops or ()]}
    finally:
        # The database thread outlives the test: its connection must not.
        await services.in_db_thread(connections.close_all)()


@pytest_asyncio.fixture
async def db_thread_key(settings: Any) -> tuple[ApiKey, str]:
    """An API key and its raw value, requests needing one (local mode off), the database thread on."""
    settings.REALTIME_LOCAL_MODE = False
    settings.REALTIME_DB_THREAD = True
    key = ApiKey(name="crm")
    raw = await sync_to_async(services.api_key_create)(key, by=services.SYSTEM)
    return key, raw


@pytest.mark.upstream
async def test_it_reads_a_creates_key_in_the_trip_that_records_the_call(db_thread_key, hops, sdp_offer):
    key, raw = db_thread_key
    hops.clear()

    response = await _api_key_request("/api/realtime/calls", raw, {"sdp": sdp_offer}, hops)

    assert response["status"] == 201, response["body"]
    call = await Call.objects.aget(call_id=json.loads(response["body"])["call_id"])
    assert (call.status, call.api_key_id) == (Call.Status.ACTIVE, key.pk)
    assert [event async for event in call.events.order_by("id").values_list("event_type", "actor")] == [
        ("call.created", "api"),
        ("call.answered", "upstream"),
    ]
    # Two trips to the database thread: the key read and the call recorded, then the answer.
    assert response["ran"] == ["run", "run"], response["body"]


async def test_it_refuses_a_revoked_keys_create_in_one_trip_recording_nothing(db_thread_key, hops, sdp_offer):
    key, raw = db_thread_key
    await sync_to_async(services.api_key_revoke)(ApiKey.objects.filter(pk=key.pk), by=services.SYSTEM)
    hops.clear()

    response = await _api_key_request("/api/realtime/calls", raw, {"sdp": sdp_offer}, hops)

    assert response["status"] == 401
    assert json.loads(response["body"])["error"]["code"] == "authentication_failed"
    assert not await Call.objects.aexists()
    assert response["ran"] == ["run", "log_response"]


async def test_it_refuses_an_unusable_create_body_after_the_key_as_before(db_thread_key, hops):
    _key, raw = db_thread_key

    hops.clear()
    invalid = await _api_key_request("/api/realtime/calls", raw, {"sdp": "not an offer"}, hops)
    unknown_key = await _api_key_request("/api/realtime/calls", raw + "x", {"sdp": "not an offer"})

    assert invalid["status"] == 400
    assert json.loads(invalid["body"])["error"]["code"] == "invalid_sdp"
    # The checks in a trip of their own, since no call is recorded.
    assert invalid["ran"] == ["run", "log_response"]
    # Who is asking is refused first, whatever the body.
    assert unknown_key["status"] == 401
    assert json.loads(unknown_key["body"])["error"]["code"] == "authentication_failed"
    assert not await Call.objects.aexists()


async def test_it_ends_a_call_in_the_trip_that_reads_the_key(db_thread_key, hops, make_call):
    key, raw = db_thread_key
    call = await sync_to_async(make_call)(api_key=key)
    hops.clear()

    try:
        response = await _request("DELETE", f"/api/realtime/calls/{call.call_id}", headers=[(b"authorization", f"Bearer {raw}".encode())])
        ran = [getattr(fn, "__name__", "") for fn in hops]
    finally:
        await services.in_db_thread(connections.close_all)()

    assert response["status"] == 200
    assert json.loads(response["body"])["call"]["status"] == "ended"
    await call.arefresh_from_db()
    assert (call.status, call.end_reason) == (Call.Status.ENDED, Call.EndReason.API_HANGUP)
    ended = [event async for event in call.events.filter(event_type="call.ended").values_list("actor", "data")]
    assert ended == [("api", {"reason": "api_hangup", "duration_seconds": 0, "api_key": key.prefix})]
    # The key, the call and its end in one trip (a pending call: nothing to hang up upstream).
    assert ran == ["run"]


@pytest.mark.upstream
async def test_it_reserves_an_idempotency_key_in_the_trip_that_reads_the_api_key(db_thread_key, hops, sdp_offer):
    key, raw = db_thread_key
    hops.clear()

    idempotent = [(b"idempotency-key", b"order-42")]
    first = await _api_key_request("/api/realtime/calls", raw, {"sdp": sdp_offer}, hops, headers=idempotent)
    hops.clear()
    again = await _api_key_request("/api/realtime/calls", raw, {"sdp": sdp_offer}, hops, headers=idempotent)

    assert first["status"] == 201, first["body"]
    # The API key and the reservation, the call recorded, the answer, the response stored: all on
    # the database thread, nothing on the request's thread.
    assert first["ran"] == ["run", "run", "run", "run"]
    assert again["status"] == 201
    assert json.loads(again["body"]) == json.loads(first["body"])
    assert {name.lower(): value for name, value in again["headers"]}[b"idempotent-replayed"] == b"true"
    assert again["ran"] == ["run"]
    assert await Call.objects.acount() == 1
    row = await IdempotencyKey.objects.aget()
    assert (row.scope, row.key, row.response_status) == (f"key:{key.pk}", "order-42", 201)
