"""The `stats.changed` push: computed only while someone subscribes to the list feed, and at most
once per burst of changes in a process (never one snapshot per transition)."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from iaposte.asgi import application
from realtime import publish, selectors, services, sessions
from realtime.models import Call, CallEvent


def _open_and_end() -> None:
    call = services.call_open(offer="v=0", session=sessions.parse_session({}), source=Call.Source.WEBRTC, actor="api")
    services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    snapshots: list[int] = []
    real = selectors.stats

    def counting(**kwargs):
        snapshots.append(1)
        return real(**kwargs)

    monkeypatch.setattr(selectors, "stats", counting)
    return snapshots


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_schedules_no_statistics_when_nobody_subscribes(computed):
    await database_sync_to_async(_open_and_end)()

    assert publish._stats_pending is None
    assert computed == []


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_computes_one_snapshot_for_a_burst_of_changes(computed, monkeypatch):
    # A burst: every change within the delay of the first (generous, for a loaded machine).
    monkeypatch.setattr(publish, "STATS_PUSH_DELAY", 2.0)
    feed = WebsocketCommunicator(application, "/ws/realtime/calls", headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
    feed.scope["client"] = ["127.0.0.1", 50000]
    assert (await feed.connect(timeout=5))[0]

    for _ in range(5):
        await database_sync_to_async(_open_and_end)()
    pushed = [await feed.receive_json_from(timeout=5) for _ in range(11)]

    # Ten lifecycle changes, then one snapshot reflecting all of them.
    assert [m["type"] for m in pushed] == ["call.changed"] * 10 + ["stats.changed"]
    assert pushed[-1]["stats"]["ended_calls"] == 5
    assert computed == [1]
    await feed.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_asks_redis_whether_any_process_holds_a_subscriber(computed, redis_url):
    # The pub/sub layer's `groups` hold this process's sockets under its own prefixed keys, never
    # the feed's name; whether a subscriber sits in another process is Redis' to say.
    from realtime.layers import FanOutRedisPubSubChannelLayer

    here, elsewhere = FanOutRedisPubSubChannelLayer(hosts=[redis_url]), FanOutRedisPubSubChannelLayer(hosts=[redis_url])
    try:
        assert publish._has_subscribers(here) is True  # maybe: scheduled, and asked before computing
        await publish._push_stats(here)
        assert computed == []

        subscriber = await elsewhere.new_channel()
        await elsewhere.group_add(publish.CALLS_GROUP, subscriber)
        await publish._push_stats(here)
        pushed = await asyncio.wait_for(elsewhere.receive(subscriber), 5)
    finally:
        await here.flush()
        await elsewhere.flush()

    assert computed == [1]
    assert pushed["type"] == "stats.changed"


def test_it_knows_an_in_memory_feed_without_subscribers():
    from realtime.layers import FanOutInMemoryChannelLayer

    memory = FanOutInMemoryChannelLayer()

    assert publish._has_subscribers(memory) is False
    memory.groups[publish.CALLS_GROUP] = {"specific.channel": 0.0}
    assert publish._has_subscribers(memory) is True
