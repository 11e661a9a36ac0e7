"""`python manage.py serve`: the web server (daphne), with the process's background work beside it.

Why a command hosting daphne's `Server`, as Channels' own `runserver` does: daphne has no ASGI
lifespan, so an ASGI application cannot learn that its server started or is stopping. Work that
must live as long as the server (the call monitors and the sweeper when REALTIME_MONITORS is
"embedded"; the local engine in local mode) therefore starts here, once daphne is ready, as tasks
on daphne's own asyncio loop: no thread started by an import, no second event loop. A stop
(SIGTERM/SIGINT, through Twisted's own signal handling) runs a "before shutdown" trigger that
stops those tasks and waits for them (monitors store what they received and release their
leases, the engine ends its calls) before daphne closes its connections and the process exits.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

from daphne import server as daphne_server
from daphne.access import AccessLogGenerator
from daphne.endpoints import build_endpoint_description_strings
from daphne.http_protocol import HTTPFactory, WebRequest
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from twisted.internet import defer
from twisted.internet import reactor as _reactor

from iaposte.asgi import application
from realtime import background, heap

# daphne (Twisted) listens with a backlog of 50: a burst of call setups overflows it and the
# kernel drops SYNs, which clients see as one-second stalls. 1024 absorbs the bursts we measure.
BACKLOG = 1024
# A stop waits this long for background work before the server closes anyway.
STOP_TIMEOUT_SECONDS = 10.0


class _Triggers(Protocol):
    def addSystemEventTrigger(self, phase: str, event_type: str, callable: Callable[[], Any]) -> Any: ...


# The reactor daphne.server installed (INSTALLED_APPS lists daphne first), as far as used here.
reactor = cast(_Triggers, _reactor)


class ZonedAccessLog(AccessLogGenerator):
    """daphne's NCSA access lines, stamped in settings.TIME_ZONE with the UTC offset that the NCSA
    format has and daphne leaves out, like every other log line."""

    def write_entry(
        self,
        host: str,
        date: datetime.datetime,
        request: str,
        status: int | None = None,
        length: int | None = None,
        ident: str | None = None,
        user: str | None = None,
    ) -> None:
        # daphne passes the naive local time; astimezone reads it as such.
        stamp = date.astimezone(ZoneInfo(settings.TIME_ZONE)).strftime("%d/%b/%Y:%H:%M:%S %z")
        self.stream.write(f'{host} {ident or "-"} {user or "-"} [{stamp}] "{request}" {status or "-"} {length or "-"}\n')


class RawBodyRequest(WebRequest):
    """daphne's request, with the body left as received. Twisted's `Request` parses a POSTed
    multipart or form-encoded body into `request.args` (which daphne never reads) and answers a body
    it cannot parse (a bad or missing multipart boundary) with a bare 400 before the application
    runs; unparsed, every body reaches Django, whose parsers answer in the API's error shape."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)


class RawBodyHTTPFactory(HTTPFactory):
    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = RawBodyRequest
        return protocol


class Server(daphne_server.Server):
    """daphne's server with `RawBodyRequest`: `run` builds its HTTP factory itself, so the factory
    is swapped as it is stored (before anything listens)."""

    _http_factory: HTTPFactory

    @property
    def http_factory(self) -> HTTPFactory:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory: HTTPFactory) -> None:
        self._http_factory = RawBodyHTTPFactory(self)


class Command(BaseCommand):
    help = "Serve the site (HTTP and WebSocket) with daphne, and run this process's background work beside it."

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
        stop = asyncio.Event()
        work: list[asyncio.Future[None]] = []
        failures: list[BaseException] = []
        server = Server(
            application=application,
            endpoints=[f"{e}:backlog={BACKLOG}" for e in build_endpoint_description_strings(host=options["host"], port=port)],
            # Twisted's own handlers: SIGTERM/SIGINT stop the reactor, which runs the triggers below.
            signal_handlers=True,
            action_logger=ZonedAccessLog(sys.stdout) if options["verbosity"] >= 1 else None,
            ready_callable=lambda: start(),
        )

        def ready(engine: tuple[str, int] | None = None) -> None:
            self.stdout.write(banner(options["host"], port, engine=engine))
            self.stdout.flush()
            # Once everything listens, before the first call: on the loop, which it then spares.
            heap.settle()
            heap.share_the_gil()

        def start() -> None:
            # Called by daphne once its listeners are set up, just before its loop runs: the
            # background work starts as a task on that loop. Where everything is gets printed
            # once it all listens: here without the engine, once the engine listens with it.
            loop = asyncio.get_event_loop()
            loop.call_soon(lambda: work.append(loop.create_task(_background(stop, with_engine=with_engine, fail=fail, ready=ready))))
            if not with_engine:
                loop.call_soon(ready)

        def fail(exc: BaseException) -> None:
            failures.append(exc)
            server.stop()

        def before_shutdown() -> defer.Deferred[Any] | None:
            # Twisted waits for the Deferred before closing connections and stopping the loop.
            stop.set()
            if not work:
                return None
            return defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.wait(work, timeout=STOP_TIMEOUT_SECONDS)))

        reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
        self.stdout.write(f"Serving on http://{options['host']}:{port}/ (pid {os.getpid()})")
        self.stdout.flush()
        server.run()
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
