"""Revoking a key, or its expiry, closes the sockets it opened (code 4401), in every process."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from iaposte.asgi import application
from realtime import services, sweeper
from realtime.consumers import CLOSE_ACCESS_REVOKED
from realtime.models import ApiKey

from .conftest import start_server, stop_server

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def _open(raw: str, path: str = "/ws/realtime/calls") -> WebsocketCommunicator:
    feed = WebsocketCommunicator(application, path, headers=[(b"host", b"localhost"), (b"authorization", f"Bearer {raw}".encode())])
    connected, _ = await feed.connect(timeout=5)
    assert connected
    return feed


async def _closed_with(feed: WebsocketCommunicator) -> tuple[dict[str, Any], dict[str, Any]]:
    notice = await feed.receive_json_from(timeout=5)
    close = await feed.receive_output(timeout=5)
    return notice, close


async def test_it_closes_a_revoked_keys_sockets_and_no_others(make_key, make_call):
    key, raw = await sync_to_async(make_key)("revoked")
    _other, other_raw = await sync_to_async(make_key)("kept")
    call = await sync_to_async(make_call)(api_key=key)
    feeds = [await _open(raw), await _open(raw, f"/ws/realtime/calls/{call.call_id}")]
    kept = await _open(other_raw)

    await sync_to_async(services.api_key_revoke)(ApiKey.objects.filter(pk=key.pk), by=services.SYSTEM)

    for feed in feeds:
        notice, close = await _closed_with(feed)
        assert notice == {"type": "access.revoked", "reason": "api_key_revoked"}
        assert close == {"type": "websocket.close", "code": CLOSE_ACCESS_REVOKED, "reason": "api_key_revoked"}
    assert await kept.receive_nothing(timeout=0.5)
    await kept.disconnect()


async def test_it_closes_sockets_when_the_sweeper_notes_an_expiry(make_key):
    key, raw = await sync_to_async(make_key)("expiring", expires_at=timezone.now() + timedelta(hours=1))
    feed = await _open(raw)
    await ApiKey.objects.filter(pk=key.pk).aupdate(expires_at=timezone.now() - timedelta(seconds=1))

    assert (await sweeper.sweep_once()).api_keys_expired == 1

    notice, close = await _closed_with(feed)
    assert (notice["reason"], close["code"]) == ("api_key_expired", CLOSE_ACCESS_REVOKED)


async def test_it_closes_sockets_at_the_keys_expiry_without_the_sweeper(make_key):
    _key, raw = await sync_to_async(make_key)("short", expires_at=timezone.now() + timedelta(seconds=1.5))
    feed = await _open(raw)

    notice, close = await _closed_with(feed)
    assert (notice["reason"], close["code"]) == ("api_key_expired", CLOSE_ACCESS_REVOKED)


# --- across processes: a real server holds the socket, this process revokes -------------------


async def test_it_closes_a_socket_held_by_another_process_within_seconds(make_key, redis_url, tmp_path, settings):
    server = await sync_to_async(start_server)(tmp_path, extra_env={"REDIS_URL": redis_url, "REALTIME_MONITORS": "off"})
    # The layer the server uses with REDIS_URL (iaposte/settings.py), here too.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "realtime.layers.FanOutRedisPubSubChannelLayer", "CONFIG": {"hosts": [redis_url]}}}
    channel_layers.backends.clear()
    try:
        key, raw = await sync_to_async(make_key)("remote")
        url = server.url.replace("http://", "ws://") + "/ws/realtime/calls"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {raw}"}, open_timeout=10) as socket:
            await asyncio.sleep(0.3)  # the server has joined the key's group once the handshake is done
            revoked_at = time.monotonic()
            await sync_to_async(services.api_key_revoke)(ApiKey.objects.filter(pk=key.pk), by=services.SYSTEM)
            notice = json.loads(await asyncio.wait_for(socket.recv(), timeout=5))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), timeout=5)
        assert notice == {"type": "access.revoked", "reason": "api_key_revoked"}
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_ACCESS_REVOKED
        assert time.monotonic() - revoked_at < 5
    finally:
        channel_layers.backends.clear()
        await sync_to_async(stop_server)(server)
