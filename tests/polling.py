"""The one way tests wait for something another process or thread does: poll until it is true."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from asgiref.sync import sync_to_async

T = TypeVar("T")


async def wait_until(predicate: Callable[[], T], *, within: float = 20.0, every: float = 0.1) -> T:
    """Call predicate() until it returns something truthy, and return that; TimeoutError after `within` s.

    Polled: the state lives in the database or another process, with nothing to await. The
    predicate runs in Django's sync thread, so it may query the database.
    """
    async with asyncio.timeout(within):
        while not (result := await sync_to_async(predicate)()):  # noqa: ASYNC110
            await asyncio.sleep(every)
    return result
