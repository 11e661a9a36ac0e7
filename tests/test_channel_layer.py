"""realtime.layers: the embedded in-memory channel layer, tuned for fan-out."""

from __future__ import annotations

import asyncio

import pytest

from realtime.layers import FanOutInMemoryChannelLayer

pytestmark = pytest.mark.asyncio


async def test_it_delivers_one_copy_of_a_group_message_to_each_member():
    layer = FanOutInMemoryChannelLayer()
    members = [await layer.new_channel() for _ in range(3)]
    for channel in members:
        await layer.group_add("g", channel)
    outsider = await layer.new_channel()
    message = {"type": "call.changed", "event": {"id": 1}}

    await layer.group_send("g", message)
    received = [await asyncio.wait_for(layer.receive(channel), 1) for channel in members]

    assert received == [message] * 3
    # Members own their top-level dict, and nothing is shared with the sender's message.
    received[0]["type"] = "changed by a member"
    assert received[1]["type"] == "call.changed"
    assert received[1]["event"] is not message["event"]
    assert outsider not in layer.channels


async def test_it_still_expires_undelivered_messages():
    layer = FanOutInMemoryChannelLayer(expiry=0)
    layer.clean_interval = 0
    channel = await layer.new_channel()
    await layer.group_add("g", channel)

    await layer.group_send("g", {"type": "call.changed"})
    await asyncio.sleep(0.01)
    await layer.group_send("g", {"type": "call.changed"})

    # It should have swept the expired message and, as upstream does, dropped its channel from the group.
    assert channel not in layer.groups.get("g", {})


async def test_it_skips_a_full_member_and_serves_the_others():
    layer = FanOutInMemoryChannelLayer(capacity=1)
    slow, fast = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", slow)
    await layer.group_add("g", fast)

    await layer.group_send("g", {"type": "first"})
    assert (await layer.receive(fast))["type"] == "first"
    await layer.group_send("g", {"type": "second"})

    assert (await layer.receive(fast))["type"] == "second"
    assert (await layer.receive(slow))["type"] == "first"
    assert layer.channels.get(slow) is None
