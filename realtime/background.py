"""Everything a process does in the background: call monitors (monitor.py), the sweeper, the
webhook dispatcher (webhooks/dispatcher.py) and the retention purge (retention.py).

One function for every process that runs them: `manage.py serve` on the web server's event loop when
REALTIME_MONITORS is "embedded", `manage.py realtime_worker` when it is "worker".
"""

from __future__ import annotations

import asyncio

from . import retention, sweeper
from .monitor import Supervisor
from .webhooks import dispatcher


async def run(stop: asyncio.Event, *, supervisor: Supervisor | None = None) -> None:
    """Watch active calls, sweep calls past their limits, send webhooks and purge expired data until
    `stop` is set.

    On return every monitor has stored what it received and released its lease, so another
    process (or this one, restarted) re-attaches the calls at once (docs/limits.md).
    """
    await asyncio.gather((supervisor or Supervisor()).run(stop), sweeper.run(stop), dispatcher.run(stop), retention.run(stop))
