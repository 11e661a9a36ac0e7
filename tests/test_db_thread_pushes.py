"""The pushes of calls run on the database thread (`services.in_db_thread`): delivered on the
caller's event loop once the call returns, in order, without the caller waiting for them; handed
over by the thread itself when the caller was cancelled meanwhile (its client went away), so none
is lost."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from channels.layers import get_channel_layer

from realtime import publish, services


async def _subscribe(call_id: str) -> tuple[Any, str]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(publish.call_group(call_id), channel)
    return layer, channel


@pytest.mark.asyncio
async def test_it_delivers_a_calls_pushes_in_order_on_the_callers_loop_when_it_returns(settings: Any) -> None:
    settings.REALTIME_DB_THREAD = True
    layer, channel = await _subscribe("call_db_thread_order")
    loop_thread = threading.get_ident()
    delivered_on: list[int] = []
    deliver = publish._deliver

    async def recording(*args: Any) -> None:
        delivered_on.append(threading.get_ident())
        await deliver(*args)

    def transition() -> str:
        # What the commit hooks of two transitions do (publish.event_recorded), on the database thread.
        publish.send(call_id="call_db_thread_order", event={"id": 1}, call=None)
        publish.send(call_id="call_db_thread_order", event={"id": 2}, call=None)
        return "done"

    publish._deliver = recording  # type: ignore[assignment]
    try:
        assert await services.in_db_thread(transition)() == "done"
        await publish.delivered()
    finally:
        publish._deliver = deliver  # type: ignore[assignment]

    assert delivered_on == [loop_thread, loop_thread]
    first = await asyncio.wait_for(layer.receive(channel), 5)
    second = await asyncio.wait_for(layer.receive(channel), 5)
    assert [first["event"], second["event"]] == [{"id": 1}, {"id": 2}]


@pytest.mark.asyncio
async def test_it_delivers_the_pushes_of_a_cancelled_callers_call_from_the_thread(settings: Any) -> None:
    settings.REALTIME_DB_THREAD = True
    layer, channel = await _subscribe("call_db_thread_cancelled")
    running, release = threading.Event(), threading.Event()

    def transition() -> None:
        running.set()
        release.wait(10)
        publish.send(call_id="call_db_thread_cancelled", event={"id": 3}, call=None)

    caller = asyncio.ensure_future(services.in_db_thread(transition)())
    await asyncio.to_thread(running.wait, 10)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    release.set()

    message = await asyncio.wait_for(layer.receive(channel), 10)
    assert message["event"] == {"id": 3}


@pytest.mark.asyncio
async def test_it_returns_before_the_pushes_are_delivered_and_delivers_them_in_order(settings: Any) -> None:
    settings.REALTIME_DB_THREAD = True
    gate = asyncio.Event()
    delivered: list[int] = []

    async def slow(layer: Any, call_id: str, event: dict[str, Any], *args: Any) -> None:
        await gate.wait()  # a channel layer slow to answer (Redis far away, say)
        delivered.append(event["id"])

    def transition(first: int) -> None:
        publish.send(call_id="call_db_thread_later", event={"id": first}, call=None)
        publish.send(call_id="call_db_thread_later", event={"id": first + 1}, call=None)

    deliver = publish._deliver
    publish._deliver = slow  # type: ignore[assignment]
    try:
        await services.in_db_thread(transition)(1)
        await services.in_db_thread(transition)(3)
        # Both calls returned, their pushes still waiting on the layer.
        assert delivered == []
        gate.set()
        await publish.delivered()
    finally:
        publish._deliver = deliver  # type: ignore[assignment]

    assert delivered == [1, 2, 3, 4]


@pytest.mark.asyncio
async def test_it_delivers_the_pushes_after_one_that_failed(settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    settings.REALTIME_DB_THREAD = True
    delivered: list[int] = []

    async def failing_first(layer: Any, call_id: str, event: dict[str, Any], *args: Any) -> None:
        if event["id"] == 1:
            raise RuntimeError("layer down")
        delivered.append(event["id"])

    def transition() -> None:
        publish.send(call_id="call_db_thread_failed", event={"id": 1}, call=None)
        publish.send(call_id="call_db_thread_failed", event={"id": 2}, call=None)

    deliver = publish._deliver
    publish._deliver = failing_first  # type: ignore[assignment]
    try:
        await services.in_db_thread(transition)()
        await publish.delivered()
    finally:
        publish._deliver = deliver  # type: ignore[assignment]

    assert delivered == [2]
    assert [record.getMessage() for record in caplog.records if record.name == "realtime.publish"] == ["Push delivery failed"]
