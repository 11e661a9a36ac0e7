"""WebSocket feeds /ws/realtime/calls and /ws/realtime/calls/<id>, through Channels' communicator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

from iaposte.asgi import application
from realtime import services, sessions
from realtime.models import Call, CallEvent

ORIGIN = (b"origin", b"http://localhost")
HOST = (b"host", b"localhost")


def _open(offer: str) -> Call:
    return services.call_open(
        offer=offer, session=sessions.parse_session({"voice": "echo"}), source=Call.Source.WEBRTC, actor=CallEvent.Actor.API
    )


def _end(call: Call) -> Call:
    return services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)


async def _receive_until(feed: WebsocketCommunicator, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Every message up to and including the first one `done` accepts."""
    messages = [await feed.receive_json_from(timeout=5)]
    while not done(messages[-1]):
        messages.append(await feed.receive_json_from(timeout=5))
    return messages


def _stats(**expected: int) -> Callable[[dict[str, Any]], bool]:
    """Statistics reflecting a burst's last change: they follow the burst, after a short delay."""
    return lambda m: m["type"] == "stats.changed" and all(m["stats"][k] == v for k, v in expected.items())


def _created(call: Call) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == "call.changed" and m["call"]["call_id"] == call.call_id


async def _connect(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[WebsocketCommunicator, bool]:
    communicator = WebsocketCommunicator(application, path, headers=[ORIGIN, HOST] if headers is None else headers)
    # Local mode: an anonymous page from loopback, as `make run` serves it.
    communicator.scope["client"] = ["127.0.0.1", 50000]
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_pushes_each_lifecycle_change_once_to_the_calls_feed(sdp_offer):
    feed, connected = await _connect("/ws/realtime/calls")
    assert connected

    call = await database_sync_to_async(_open)(sdp_offer)
    await database_sync_to_async(_end)(call)
    pushed = await _receive_until(feed, _stats(total_calls=1, ended_calls=1))

    # It should push exactly one message per transition, in the REST API's shapes...
    changes = [m for m in pushed if m["type"] == "call.changed"]
    assert [(m["event"]["event_type"], m["call"]["status"]) for m in changes] == [("call.created", "pending"), ("call.ended", "ended")]
    assert {m["call"]["call_id"] for m in changes} == {call.call_id}
    ended_ids = CallEvent.objects.filter(call_id=call.pk, event_type="call.ended").values_list("id", flat=True)
    assert changes[1]["event"]["id"] == await ended_ids.aget()
    # ...then statistics once the burst is over, reflecting its last change.
    assert pushed[-1]["type"] == "stats.changed"
    assert len(pushed) - len(changes) <= 2
    assert (pushed[-1]["stats"]["total_calls"], pushed[-1]["stats"]["ended_calls"]) == (1, 1)
    assert pushed[-1]["stats"]["calls_by_voice"] == {"echo": 1}
    await feed.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_pushes_a_calls_events_to_its_own_feed_only(sdp_offer):
    call = await database_sync_to_async(_open)(sdp_offer)
    other = await database_sync_to_async(_open)(sdp_offer)
    feed, connected = await _connect(f"/ws/realtime/calls/{call.call_id}")
    assert connected

    await database_sync_to_async(_end)(other)
    await database_sync_to_async(_end)(call)

    pushed = await feed.receive_json_from(timeout=5)
    assert pushed == {
        "type": "call.event",
        "event": {
            "id": pushed["event"]["id"],
            "call_id": call.call_id,
            "event_type": "call.ended",
            "timestamp": pushed["event"]["timestamp"],
            "event_data": {"reason": "api_hangup", "duration_seconds": pushed["event"]["event_data"]["duration_seconds"]},
            "actor": "api",
        },
    }
    # It should not receive the other call's events: the other call ended first, so its end would
    # have arrived before this one.
    await feed.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_pushes_nothing_for_a_rolled_back_change(sdp_offer):
    feed, connected = await _connect("/ws/realtime/calls")
    assert connected
    call = await database_sync_to_async(_open)(sdp_offer)
    await _receive_until(feed, _stats(total_calls=1))  # the creation, and the statistics after it

    def end_then_fail() -> None:
        with transaction.atomic():
            _end(call)
            raise RuntimeError("after the transition, before commit")

    with pytest.raises(RuntimeError):
        await database_sync_to_async(end_then_fail)()
    later = await database_sync_to_async(_open)(sdp_offer)

    # The next push is the later change's: the rolled-back end pushed nothing before it.
    assert _created(later)(await feed.receive_json_from(timeout=5))
    assert await Call.objects.filter(pk=call.pk).values_list("status", flat=True).aget() == "pending"
    await feed.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_refuses_an_unknown_call():
    feed, connected = await _connect("/ws/realtime/calls/call_0123456789abcdef0123456789abcdef")
    assert not connected
    await feed.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_refuses_sockets_from_other_origins():
    feed, connected = await _connect("/ws/realtime/calls", headers=[(b"origin", b"http://evil.example"), HOST])
    assert not connected
    await feed.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_refuses_an_anonymous_server_side_client_from_another_machine():
    # No Origin (not a browser) and no key: only local mode from loopback may go without one.
    feed = WebsocketCommunicator(application, "/ws/realtime/calls", headers=[HOST])
    feed.scope["client"] = ["192.0.2.10", 50000]
    connected, _ = await feed.connect(timeout=5)
    assert not connected
    await feed.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_ignores_what_clients_send(sdp_offer):
    feed, connected = await _connect("/ws/realtime/calls")
    assert connected

    await feed.send_json_to({"type": "call.end", "call_id": "whatever"})
    later = await database_sync_to_async(_open)(sdp_offer)

    # It should stay push-only: no reply (the next message is the later change's push), nothing changed.
    assert _created(later)(await feed.receive_json_from(timeout=5))
    assert await Call.objects.filter(status=Call.Status.ENDED).acount() == 0
    await feed.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_pushes_an_end_from_the_admin_once(sdp_offer, admin_client):
    call = await database_sync_to_async(_open)(sdp_offer)
    feed, connected = await _connect("/ws/realtime/calls")
    assert connected

    response = await sync_to_async(admin_client.post)("/admin/realtime/call/", {"action": "end_calls", "_selected_action": [call.pk]})

    assert response.status_code == 302
    changes = [m for m in await _receive_until(feed, _stats(ended_calls=1)) if m["type"] == "call.changed"]
    assert [(m["event"]["event_type"], m["event"]["actor"], m["call"]["status"]) for m in changes] == [("call.ended", "admin", "ended")]
    await feed.disconnect()
