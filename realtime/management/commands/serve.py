"""`python manage.py serve`: the web server (uvicorn), with the process's background work beside it.

Why a command hosting uvicorn's `Server` rather than the `uvicorn` command: work that must live as
long as the server (the call monitors and the sweeper when REALTIME_MONITORS is "embedded"; the
local engine in local mode) starts here, once the server listens, as tasks on the server's own
asyncio loop: no thread started by an import, no second event loop, and no ASGI lifespan needed
(Channels' router has none). A stop (SIGTERM/SIGINT, which the command handles, not uvicorn) first
stops those tasks and waits for them (monitors store what they received and release their leases,
the engine ends its calls), then the server stops accepting, finishes its requests, closes its
connections, and the process exits.

Why uvicorn (with httptools and websockets' Sans-I/O protocol), where daphne served before: the
same pushes and requests cost the process about half the CPU (docs/benchmarks.md, "The web
server"). daphne writes each WebSocket frame through Twisted, which registers the socket with the
loop, and sends and unregisters it on the next turn; uvicorn's asyncio transport sends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from iaposte import processes
from iaposte.asgi import application
from realtime import background, heap

logger = logging.getLogger(__name__)

# A burst of call setups must not find the listen queue full: the kernel would drop SYNs, which
# clients see as one-second stalls. 1024 absorbs the bursts we measure.
BACKLOG = 1024
# A stop waits this long for background work, then as long for requests in flight.
STOP_TIMEOUT_SECONDS = 10.0
# Idle keep-alive connections are kept longer than nginx keeps its own to us (60 s, its
# `keepalive_timeout` default in an upstream block): were the server to close first, nginx could
# send a request on a connection being closed, and a POST is not retried (502).
KEEP_ALIVE_SECONDS = 75


class AccessLog:
    """NCSA access lines, stamped in settings.TIME_ZONE with their UTC offset like every other log
    line: one per HTTP response, and a WebSocket's connection, refusal and disconnection.

    Written here rather than by uvicorn's "uvicorn.access" logger: the local engine's server, in
    the same process under `make run`, turns that logger off for itself, and so for both."""

    def __init__(self, app: Any, stream: TextIO) -> None:
        self.app = app
        self.stream = stream

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
        client = scope.get("client")
        host = f"{client[0]}:{client[1]}" if client else "-"
        if scope["type"] == "websocket":
            accepted = False

            async def send_ws(message: dict[str, Any]) -> None:
                nonlocal accepted
                if message["type"] == "websocket.accept":
                    accepted = True
                    self.write(host, f"WSCONNECT {path}")
                elif message["type"] == "websocket.close" and not accepted:
                    self.write(host, f"WSREJECT {path}")
                await send(message)

            try:
                await self.app(scope, receive, send_ws)
            finally:
                if accepted:
                    self.write(host, f"WSDISCONNECT {path}")
            return None
        status: int | None = None
        length = 0

        async def send_http(message: dict[str, Any]) -> None:
            nonlocal status, length
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                length += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_http)
        finally:
            self.write(host, f"{scope['method']} {path}", status, length)
        return None

    def write(self, host: str, request: str, status: int | None = None, length: int | None = None) -> None:
        stamp = datetime.datetime.now(ZoneInfo(settings.TIME_ZONE)).strftime("%d/%b/%Y:%H:%M:%S %z")
        self.stream.write(f'{host} - - [{stamp}] "{request}" {status or "-"} {length if status else "-"}\n')
        self.stream.flush()


class WebServer(uvicorn.Server):
    """uvicorn, in a process whose signals the command handles (it stops background work first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def config(*, host: str, port: int, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(
        AccessLog(application, sys.stdout) if access_log else application,
        host=host,
        port=port,
        http="httptools",
        # Of uvicorn's WebSocket protocols, the one that costs least per frame sent (the pushes).
        ws="websockets-sansio",
        # Every push would be compressed once per socket; they are small JSON documents.
        ws_per_message_deflate=False,
        lifespan="off",
        backlog=BACKLOG,
        # Our LOGGING is the process's; the access lines are AccessLog's.
        log_config=None,
        access_log=False,
        # The client's address comes from the socket; realtime.proxy alone believes a proxy's header.
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=int(STOP_TIMEOUT_SECONDS),
    )


class Command(BaseCommand):
    help = "Serve the site (HTTP and WebSocket) with uvicorn, and run this process's background work beside it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=None, help="Port to bind (default: the PORT setting).")
        engine = parser.add_mutually_exclusive_group()
        engine.add_argument(
            "--engine",
            dest="engine",
            action="store_true",
            default=None,
            help="Also serve the local engine (default in local mode) on LOCALREALTIME_HOST:LOCALREALTIME_PORT.",
        )
        engine.add_argument("--no-engine", dest="engine", action="store_false", help="Do not serve the local engine here.")

    def handle(self, *args: Any, **options: Any) -> None:
        port = settings.PORT if options["port"] is None else options["port"]
        with_engine = settings.LOCALREALTIME_ENABLED if options["engine"] is None else options["engine"]
        host, verbosity = options["host"], options["verbosity"]
        self.stdout.write(f"Serving on http://{host}:{port}/ (pid {os.getpid()})")
        self.stdout.flush()
        asyncio.run(self.serve(host=host, port=port, with_engine=with_engine, access_log=verbosity >= 1))

    async def serve(self, *, host: str, port: int, with_engine: bool, access_log: bool) -> None:
        stop = asyncio.Event()
        processes.stop_on_signals(stop)
        failures: list[BaseException] = []

        def fail(exc: BaseException) -> None:
            failures.append(exc)
            stop.set()

        def ready(engine: tuple[str, int] | None = None) -> None:
            self.stdout.write(banner(host, port, engine=engine))
            self.stdout.flush()

        if with_engine:
            from localrealtime import server as _engine  # noqa: F401  (imported now: part of the frozen heap)
        # Before the first connection is accepted: collecting the start-up heap holds the loop
        # (0.2 s, 2 s on a loaded machine), and a request, or a create's answer from the engine
        # in this process, would wait that long behind it.
        heap.settle()
        heap.share_the_gil()
        server = WebServer(config(host=host, port=port, access_log=access_log))
        serving = asyncio.ensure_future(server.serve())
        while not server.started:
            if serving.done():
                # uvicorn logs why and exits when it cannot listen (its port taken, say).
                with contextlib.suppress(SystemExit):
                    await serving
                raise CommandError(f"could not listen on {host}:{port}")
            await asyncio.sleep(0.01)
        work = asyncio.ensure_future(_background(stop, with_engine=with_engine, fail=fail, ready=ready))
        if not with_engine:
            ready()
        await asyncio.wait((serving, asyncio.ensure_future(stop.wait())), return_when=asyncio.FIRST_COMPLETED)
        # Background work first (it may still use the database and the engine), then the server.
        logger.info("Stopping: background work first")
        stop.set()
        await asyncio.wait((work,), timeout=STOP_TIMEOUT_SECONDS)
        logger.info("Stopping: closing the server's connections")
        server.should_exit = True
        with contextlib.suppress(SystemExit):
            await serving
        logger.info("Stopped")
        if failures:
            raise CommandError(str(failures[0]))


def banner(host: str, port: int, *, engine: tuple[str, int] | None) -> str:
    """Where everything is, for the person who just typed `make run`."""
    # A wildcard address is not one to browse to; this machine answers on it as localhost.
    shown = "localhost" if host in ("", "0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    site = f"http://{shown}:{port}"
    rows = [
        ("Demo page", f"{site}/realtime-api.html"),
        ("Admin", f"{site}/admin/"),
        ("Dashboard", f"{site}/admin/dashboard/"),
        ("API docs", f"{site}/api/docs/"),
    ]
    if engine is not None:
        engine_host = f"[{engine[0]}]" if ":" in engine[0] else engine[0]
        rows.append(("Local engine", f"http://{engine_host}:{engine[1]}/v1"))
        sip_host = settings.LOCALREALTIME_SIP_HOST
        sip_host = f"[{sip_host}]" if ":" in sip_host else sip_host
        rows.append(("Local SIP", f"sip:{settings.LOCALREALTIME_PROJECT_ID}@{sip_host}:{settings.LOCALREALTIME_SIP_PORT} (UDP and TCP)"))
    rows.append(("Time zone", settings.TIME_ZONE))
    width = max(len(name) for name, _ in rows)
    return "Ready:\n" + "\n".join(f"  {name.ljust(width)}  {where}" for name, where in rows)


async def _background(
    stop: asyncio.Event,
    *,
    with_engine: bool,
    fail: Callable[[BaseException], None],
    ready: Callable[[tuple[str, int]], None],
) -> None:
    """This process's long-lived work until `stop`. The monitors and the sweeper stop first (they
    may still talk to the engine), then the engine. An engine that cannot serve (its port taken,
    say) calls `fail` with the error, which stops the whole server."""
    engine_stop = asyncio.Event()
    tasks: list[asyncio.Future[None]] = []
    if with_engine:
        from localrealtime import server as engine

        serving = asyncio.ensure_future(
            engine.run(engine_stop, settings.LOCALREALTIME_HOST, settings.LOCALREALTIME_PORT, ready=lambda host, port: ready((host, port)))
        )

        def failed(task: asyncio.Future[None]) -> None:
            if not task.cancelled() and (exc := task.exception()) is not None:
                fail(exc)

        serving.add_done_callback(failed)
        tasks.append(serving)
    try:
        if settings.REALTIME_MONITORS == "embedded":
            await background.run(stop)
        else:
            await stop.wait()
    finally:
        engine_stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
