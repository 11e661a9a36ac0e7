"""The start-up heap frozen once a server listens (realtime.heap): full collections then skip it."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator

import pytest

from realtime import heap, upstream


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.asyncio
async def test_it_imports_what_calls_import_lazily_and_freezes_the_heap(unfrozen, settings):
    settings.REALTIME_GC_FREEZE = True
    assert gc.get_freeze_count() == 0
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert all(name in sys.modules for name in heap.LAZY_MODULES)
    # The SDK client of this loop exists (built, with its TLS context, before the first call).
    assert asyncio.get_running_loop() in upstream._clients
    # What is allocated afterwards is collected as before.
    garbage: list[object] = []
    garbage.append(garbage)
    del garbage
    assert gc.collect() >= 1


def test_it_leaves_the_heap_alone_when_turned_off(unfrozen, settings):
    settings.REALTIME_GC_FREEZE = False
    heap.settle()
    assert gc.get_freeze_count() == 0


def test_it_freezes_without_a_running_loop(unfrozen, settings):
    settings.REALTIME_GC_FREEZE = True
    heap.settle()
    assert gc.get_freeze_count() > 0


@pytest.mark.asyncio
async def test_it_still_freezes_when_the_sdk_client_cannot_be_built(unfrozen, settings):
    settings.REALTIME_GC_FREEZE = True
    settings.OPENAI_API_KEY = ""
    settings.LOCALREALTIME_API_KEY = ""
    upstream._clients.pop(asyncio.get_running_loop(), None)
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert asyncio.get_running_loop() not in upstream._clients


@pytest.fixture
def switch_interval() -> Iterator[float]:
    before = sys.getswitchinterval()
    yield before
    sys.setswitchinterval(before)


def test_it_shortens_the_gil_switch_interval(switch_interval, settings):
    settings.REALTIME_GIL_SWITCH_MS = 1.0
    heap.share_the_gil()
    assert sys.getswitchinterval() == pytest.approx(0.001)


def test_it_keeps_pythons_switch_interval_when_set_to_zero(switch_interval, settings):
    settings.REALTIME_GIL_SWITCH_MS = 0
    heap.share_the_gil()
    assert sys.getswitchinterval() == switch_interval
