"""WebSocket authentication (`realtime.auth.websocket.principal_from_scope`) through Channels' real middleware.

The consumer below is this test's own: it does what the product's consumers do at connect time
(resolve the principal, refuse or accept with our subprotocol), behind the stack the project's
routing uses: BrowserOriginValidator(AuthMiddlewareStack(...)).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from realtime.auth.principals import LOCAL, Principal, key_principal, may_see_call, may_see_calls_of
from realtime.auth.websocket import WEBSOCKET_SUBPROTOCOL, BrowserOriginValidator, principal_from_scope, websocket_subprotocol
from realtime.models import ApiKey

HOST = "localhost:5000"


class WhoAmIConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.principal = await principal_from_scope(self.scope)
        if self.principal is None:
            await self.close(code=4401)
            return
        await self.accept(subprotocol=websocket_subprotocol(self.scope))
        key = self.principal.api_key
        await self.send_json({"kind": self.principal.kind, "api_key": key.prefix if key else None, "can_end": self.principal.can_end})


application = BrowserOriginValidator(AuthMiddlewareStack(WhoAmIConsumer.as_asgi()))


async def _connect(
    *,
    headers: dict[str, str] | None = None,
    subprotocols: list[str] | None = None,
    client: str = "127.0.0.1",
    path: str = "/ws/realtime/calls",
) -> tuple[bool, Any, dict[str, Any] | None]:
    all_headers = {"host": HOST, "origin": f"http://{HOST}", **(headers or {})}
    encoded = [(k.encode(), v.encode()) for k, v in all_headers.items() if v is not None]
    communicator = WebsocketCommunicator(application, path, headers=encoded, subprotocols=subprotocols)
    communicator.scope["client"] = [client, 50123]
    connected, detail = await communicator.connect(timeout=10)
    body = await communicator.receive_json_from(timeout=10) if connected else None
    await communicator.disconnect()
    return connected, detail, body


@pytest.fixture(autouse=True)
def _production(settings):
    settings.REALTIME_LOCAL_MODE = False


@pytest.fixture
def key_and_raw(db: None, make_key: Any) -> tuple[ApiKey, str]:
    return make_key("ws")


def _session_cookie(user: Any) -> str:
    browser = Client()
    browser.force_login(user)
    return f"sessionid={browser.cookies['sessionid'].value}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_accepts_a_key_in_the_authorization_header(key_and_raw):
    key, raw = key_and_raw

    connected, _sub, body = await _connect(headers={"authorization": f"Bearer {raw}", "origin": None})

    assert connected
    assert body == {"kind": "api_key", "api_key": key.prefix, "can_end": True}


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_accepts_a_key_offered_as_a_subprotocol_without_echoing_it(key_and_raw):
    key, raw = key_and_raw

    connected, subprotocol, body = await _connect(subprotocols=[WEBSOCKET_SUBPROTOCOL, f"bearer.{raw}"])

    assert connected
    assert subprotocol == WEBSOCKET_SUBPROTOCOL
    assert body["api_key"] == key.prefix


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_ignores_a_key_in_the_url(key_and_raw):
    _key, raw = key_and_raw

    connected, code, _ = await _connect(path=f"/ws/realtime/calls?token={raw}")

    assert (connected, code) == (False, 4401)


@pytest.mark.parametrize("change", ["revoked_at", "expires_at"])
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_refuses_revoked_and_expired_keys_even_locally(key_and_raw, settings, change):
    settings.REALTIME_LOCAL_MODE = True
    key, raw = key_and_raw
    await ApiKey.objects.filter(pk=key.pk).aupdate(**{change: timezone.now() - timedelta(seconds=1)})

    connected, code, _ = await _connect(headers={"authorization": f"Bearer {raw}"})

    assert (connected, code) == (False, 4401)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_refuses_anonymous_sockets_in_production_mode():
    connected, code, _ = await _connect()

    assert (connected, code) == (False, 4401)


@pytest.mark.parametrize(("client", "accepted"), [("127.0.0.1", True), ("::1", True), ("10.1.2.3", False)])
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_lets_anonymous_loopback_sockets_in_local_mode_only(settings, client, accepted):
    settings.REALTIME_LOCAL_MODE = True

    connected, _detail, body = await _connect(client=client)

    assert connected is accepted
    if accepted:
        assert body == {"kind": "local", "api_key": None, "can_end": True}


@pytest.mark.parametrize(("perms", "can_end"), [(("view_call",), False), (("view_call", "end_call"), True)])
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_knows_staff_from_their_session_cookie(django_user_model, perms, can_end):
    cookie = await database_sync_to_async(_staff_cookie)(django_user_model, perms)

    connected, _detail, body = await _connect(headers={"cookie": cookie}, client="203.0.113.5")

    assert connected
    assert body == {"kind": "staff", "api_key": None, "can_end": can_end}


@pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost.evil.example"])
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_refuses_cross_origin_sockets(django_user_model, settings, origin):
    settings.REALTIME_LOCAL_MODE = True
    cookie = await database_sync_to_async(_staff_cookie)(django_user_model, ("view_call",))

    connected, _code, _ = await _connect(headers={"cookie": cookie, "origin": origin})

    assert connected is False


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_refuses_a_session_from_another_port_of_an_allowed_host(django_user_model):
    # AllowedHostsOriginValidator compares host names only; the cookie is ambient across ports.
    cookie = await database_sync_to_async(_staff_cookie)(django_user_model, ("view_call",))
    scope = {
        "type": "websocket",
        "headers": [(b"host", HOST.encode()), (b"origin", b"http://localhost:8080"), (b"cookie", cookie.encode())],
        "client": ["127.0.0.1", 1],
        "user": await database_sync_to_async(django_user_model.objects.get)(username="staff"),
    }

    assert await principal_from_scope(scope) is None


def _staff_cookie(django_user_model: Any, perms: tuple[str, ...]) -> str:
    user = django_user_model.objects.create_user("staff", "staff@example.test", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="realtime", codename__in=perms))
    return _session_cookie(user)


# --- the visibility rules the consumers apply to calls and pushes ------------------------------


@pytest.mark.django_db
def test_it_lets_a_key_see_and_end_only_its_own_calls(make_key, make_call):
    alice, _ = make_key("alice")
    bob, _ = make_key("bob")
    alices, bobs, nobodys = make_call(api_key=alice), make_call(api_key=bob), make_call()
    principal = key_principal(alice)

    assert [may_see_call(principal, c) for c in (alices, bobs, nobodys)] == [True, False, False]
    assert [may_see_call(principal, c) and principal.can_end for c in (alices, bobs, nobodys)] == [True, False, False]
    assert may_see_calls_of(principal, api_key_id=alice.pk) and not may_see_calls_of(principal, api_key_id=None)


@pytest.mark.django_db
def test_it_lets_staff_and_local_see_every_call_and_end_as_permitted(make_key, make_call):
    key, _ = make_key()
    call = make_call(api_key=key)
    viewer = Principal(kind="staff", can_view=True, can_create=False, can_end=False, username="viewer")
    blind = Principal(kind="staff", can_view=False, can_create=False, can_end=True, username="blind")

    # Ending a call takes seeing it (the scoped lookup) and `can_end` (the permission class).
    assert may_see_call(LOCAL, call) and LOCAL.can_end
    assert may_see_call(viewer, call) and not viewer.can_end
    assert not may_see_call(blind, call)
    assert not may_see_call(None, call)
