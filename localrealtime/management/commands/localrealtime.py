"""`python manage.py localrealtime`: the local engine alone, as its own process (OpenAI's stand-in).

The production-like topology runs it beside the web processes; `manage.py serve` runs the same
engine inside the web process in local mode. SIGTERM/SIGINT end its calls and stop it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from iaposte import processes
from localrealtime import server
from realtime import heap


class Command(BaseCommand):
    help = "Serve the local Realtime engine (OpenAI's stand-in: /v1/realtime/...) on its own."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=None, help="Address to bind (default: the LOCALREALTIME_HOST setting).")
        parser.add_argument("--port", type=int, default=None, help="Port to bind (default: the LOCALREALTIME_PORT setting).")

    def handle(self, *args: Any, **options: Any) -> None:
        host = settings.LOCALREALTIME_HOST if options["host"] is None else options["host"]
        port = settings.LOCALREALTIME_PORT if options["port"] is None else options["port"]
        try:
            asyncio.run(self._run(host, port))
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc

    async def _run(self, host: str, port: int) -> None:
        # As the web processes do (realtime.heap): full collections walk only what came after.
        heap.freeze()
        stop = asyncio.Event()
        processes.stop_on_signals(stop)

        def ready(bound_host: str, bound_port: int) -> None:
            self.stdout.write(f"localrealtime listening on http://{bound_host}:{bound_port}{server.PREFIX}")
            self.stdout.flush()

        await server.run(stop, host, port, ready=ready)
