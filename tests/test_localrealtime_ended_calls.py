"""localrealtime.engine: what the engine keeps of an ended call (its description, not its peer)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from localrealtime.caller import sample_offer
from localrealtime.engine import EndedCall, Engine

pytestmark = pytest.mark.asyncio


async def test_it_keeps_an_ended_call_s_description_and_hangups_but_not_its_peer(settings):
    settings.LOCALREALTIME_KEEP_ENDED = 2
    engine = Engine()
    calls = [(await engine.create(offer=await sample_offer(), session={"type": "realtime"}))[0] for _ in range(3)]
    peer = weakref.ref(calls[0].pc)
    ids = [call.id for call in calls]
    del calls

    assert await engine.hangup(ids[0]) is True
    await asyncio.sleep(0.1)  # its tasks, cancelled, finish
    gc.collect()

    ended = engine.find(ids[0])
    assert isinstance(ended, EndedCall)
    assert peer() is None
    described = ended.describe()
    assert (described["id"], described["connection_state"], described["closed_reason"], described["hangup_requests"]) == (
        ids[0],
        "closed",
        "hangup",
        1,
    )
    # A hangup of an ended call is counted, and refused.
    assert await engine.hangup(ids[0]) is False
    assert engine.find(ids[0]).describe()["hangup_requests"] == 2
    # At most LOCALREALTIME_KEEP_ENDED are kept, the oldest dropped first.
    for call_id in ids[1:]:
        await engine.hangup(call_id)
    assert list(engine.ended) == ids[1:]
    assert engine.find(ids[0]) is None
