"""`python manage.py realtime_worker`: watch active calls through their sideband, and sweep calls
past their limits (scaled mode; see realtime/sweeper.py).

Run as many as needed beside the web processes (with REALTIME_MONITORS=worker there): each call
is watched by exactly one worker, claimed through a lease in the database, and taken over by
another worker within a lease's length if its holder dies. SIGTERM/SIGINT stop it cleanly,
releasing its calls at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand

from iaposte import processes
from realtime import background, heap
from realtime.monitor import Supervisor


class Command(BaseCommand):
    help = "Watch active calls through their sideband WebSocket, record what happens, and end calls past their limits."

    def handle(self, *args: Any, **options: Any) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        stop = asyncio.Event()
        processes.stop_on_signals(stop)
        supervisor = Supervisor()
        heap.settle()  # its loop carries every monitored call's sideband: no long GC pauses there either
        self.stdout.write(f"realtime_worker {supervisor.owner} started")
        self.stdout.flush()
        await background.run(stop, supervisor=supervisor)
