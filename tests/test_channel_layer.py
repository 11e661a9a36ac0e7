"""realtime.layers: the channel layers tuned for fan-out (in memory; Redis pub/sub, on a real Redis)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.connection import AbstractConnection

from realtime.layers import FanOutInMemoryChannelLayer, FanOutRedisPubSubChannelLayer

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


async def test_it_sends_several_group_messages_in_order():
    layer = FanOutInMemoryChannelLayer()
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("a", first)
    await layer.group_add("b", second)

    await layer.group_send_many([("a", {"type": "x", "n": 1}), ("b", {"type": "x", "n": 2}), ("a", {"type": "x", "n": 3})])

    assert [(await layer.receive(first))["n"], (await layer.receive(first))["n"]] == [1, 3]
    assert (await layer.receive(second))["n"] == 2
    # Nothing else was queued: an emptied channel's queue is dropped.
    assert first not in layer.channels and second not in layer.channels


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


# --- the scaled setup's layer: Redis pub/sub, decoding a push once per process -------------------


async def test_it_decodes_a_group_message_once_for_every_member_of_a_process(redis_url):
    # Two layers, as two web processes would hold: members in one, the sender in the other.
    receiving, sending = FanOutRedisPubSubChannelLayer(hosts=[redis_url]), FanOutRedisPubSubChannelLayer(hosts=[redis_url])
    members = [await receiving.new_channel() for _ in range(3)]
    for channel in members:
        await receiving.group_add("g", channel)
    message = {"type": "call.changed", "event": {"id": 1}, "call": {"call_id": "call_1"}}
    try:
        await asyncio.sleep(0.2)  # the subscription reaches Redis before the PUBLISH
        await sending.group_send("g", message)
        received = [await asyncio.wait_for(receiving.receive(channel), 5) for channel in members]
        direct = await receiving.new_channel()
        await sending.send(direct, {"type": "one", "n": 1})
        alone = await asyncio.wait_for(receiving.receive(direct), 5)
    finally:
        await receiving.flush()
        await sending.flush()

    assert received == [message] * 3
    # One decoded message per process: members share its nested values, each owns its top level.
    assert received[0]["event"] is received[1]["event"] is received[2]["event"]
    received[0]["type"] = "changed by a member"
    assert received[1]["type"] == "call.changed"
    # A message to one channel is decoded for it alone, as upstream does.
    assert alone == {"type": "one", "n": 1}


async def test_it_counts_the_processes_that_hold_members_of_a_group(redis_url):
    asking, holding = FanOutRedisPubSubChannelLayer(hosts=[redis_url]), FanOutRedisPubSubChannelLayer(hosts=[redis_url])
    try:
        assert await asking.group_listeners("g") == 0
        member = await holding.new_channel()
        await holding.group_add("g", member)
        assert await asking.group_listeners("g") == 1
        assert await holding.group_listeners("g") == 1
        await holding.group_discard("g", member)
        assert await asking.group_listeners("g") == 0
    finally:
        await asking.flush()
        await holding.flush()


async def test_it_publishes_several_group_messages_in_one_round_trip(redis_url, monkeypatch):
    receiving, sending = FanOutRedisPubSubChannelLayer(hosts=[redis_url]), FanOutRedisPubSubChannelLayer(hosts=[redis_url])
    first, second = await receiving.new_channel(), await receiving.new_channel()
    await receiving.group_add("a", first)
    await receiving.group_add("b", second)
    await sending.group_send("warm", {"type": "x"})  # the sender's connection, opened
    sent: list[int] = []
    send = AbstractConnection.send_packed_command

    async def counted(self, command, check_health=True):
        sent.append(1)
        return await send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    try:
        await asyncio.sleep(0.2)  # the subscriptions reach Redis before the PUBLISHes
        await sending.group_send_many([("a", {"type": "x", "n": 1}), ("b", {"type": "x", "n": 2}), ("a", {"type": "x", "n": 3})])
        in_a = [(await asyncio.wait_for(receiving.receive(first), 5))["n"] for _ in range(2)]
        in_b = (await asyncio.wait_for(receiving.receive(second), 5))["n"]
    finally:
        monkeypatch.undo()
        await receiving.flush()
        await sending.flush()

    assert in_a == [1, 3]
    assert in_b == 2
    # The three PUBLISHes written together, once.
    assert len(sent) == 1
