"""The feeds' message loop (realtime.consumers.dispatch_from): what Channels' await_many_dispatch
guarantees, without a task per message."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from iaposte.asgi import application
from realtime import publish
from realtime.consumers import dispatch_from


def _source(queue: asyncio.Queue[dict[str, Any]]) -> Any:
    return queue.get


@pytest.mark.asyncio
async def test_it_runs_handlers_one_at_a_time_in_the_order_messages_were_read():
    socket: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    layer: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    handled: list[str] = []
    running = 0

    async def dispatch(message: dict[str, Any]) -> None:
        nonlocal running
        running += 1
        assert running == 1, "two handlers ran at once"
        await asyncio.sleep(0.01)  # a handler that waits (a send to a slow socket)
        handled.append(message["type"])
        running -= 1
        if message["type"] == "websocket.disconnect":
            raise StopConsumer

    loop = asyncio.create_task(dispatch_from((socket.get, layer.get), dispatch))
    socket.put_nowait({"type": "websocket.connect"})
    await asyncio.sleep(0)
    layer.put_nowait({"type": "call.changed"})
    layer.put_nowait({"type": "stats.changed"})
    await asyncio.sleep(0.05)
    socket.put_nowait({"type": "websocket.disconnect"})
    with pytest.raises(StopConsumer):
        await asyncio.wait_for(loop, 5)
    assert handled == ["websocket.connect", "call.changed", "stats.changed", "websocket.disconnect"]


@pytest.mark.asyncio
async def test_it_stops_reading_every_source_once_a_handler_stops_the_consumer():
    socket: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    layer: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    tasks_before = asyncio.all_tasks()

    async def dispatch(message: dict[str, Any]) -> None:
        raise StopConsumer

    socket.put_nowait({"type": "websocket.disconnect"})
    with pytest.raises(StopConsumer):
        await asyncio.wait_for(dispatch_from((socket.get, layer.get), dispatch), 5)
    # The layer's reader, parked on an empty queue, was cancelled and awaited: nothing is left.
    assert asyncio.all_tasks() == tasks_before
    layer.put_nowait({"type": "call.changed"})
    await asyncio.sleep(0.01)
    assert layer.qsize() == 1


@pytest.mark.asyncio
async def test_it_raises_a_handlers_error():
    socket: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def dispatch(message: dict[str, Any]) -> None:
        raise ValueError("No handler for message type nope")

    socket.put_nowait({"type": "nope"})
    with pytest.raises(ValueError, match="nope"):
        await asyncio.wait_for(dispatch_from((socket.get,), dispatch), 5)


@pytest.mark.asyncio
async def test_it_starts_no_task_per_message():
    socket: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    layer: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    created = 0
    loop = asyncio.get_running_loop()

    def counting_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        nonlocal created
        created += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    all_handled = asyncio.Event()

    async def dispatch(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.disconnect":
            raise StopConsumer
        if message["n"] == 99:
            all_handled.set()

    for n in range(100):
        layer.put_nowait({"type": "call.changed", "n": n})
    loop.set_task_factory(counting_factory)
    try:
        running = asyncio.ensure_future(dispatch_from((socket.get, layer.get), dispatch))
        await asyncio.wait_for(all_handled.wait(), 5)
        socket.put_nowait({"type": "websocket.disconnect"})
        with pytest.raises(StopConsumer):
            await asyncio.wait_for(running, 5)
    finally:
        loop.set_task_factory(None)
    # The loop itself, one reader per source, and wait_for's: never one per message.
    assert created <= 4


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_leaves_the_feeds_group_and_no_task_behind_when_the_socket_closes():
    tasks_before = asyncio.all_tasks()
    feed = WebsocketCommunicator(application, "/ws/realtime/calls", headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
    feed.scope["client"] = ["127.0.0.1", 50000]
    connected, _ = await feed.connect(timeout=5)
    assert connected
    layer = get_channel_layer()
    assert len(layer.groups[publish.CALLS_GROUP]) == 1
    await layer.group_send(publish.CALLS_GROUP, {"type": "stats.changed", "stats": {"total_calls": 7}})
    assert await feed.receive_json_from(timeout=5) == {"type": "stats.changed", "stats": {"total_calls": 7}}
    await feed.disconnect()
    assert publish.CALLS_GROUP not in layer.groups or not layer.groups[publish.CALLS_GROUP]
    assert {task for task in asyncio.all_tasks() if not task.done()} <= tasks_before | {asyncio.current_task()}
