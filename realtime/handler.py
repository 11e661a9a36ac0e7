"""Django's ASGI handler, with the per-request thread work of an API request cut down.

Django runs an async request's sync parts (each `MiddlewareMixin` hook, `process_view`, the signal
receivers, `response.close`) through `sync_to_async`, on a thread it starts for that request and
joins at its end. Measured on this project's 2-core machine (asgiref 3.13, Python 3.11): starting
and joining that thread costs about 0.38 ms of CPU per request, and each hop onto it about 0.14 ms;
a create made 20 hops (16 of them middleware hooks), about 3 ms of the broker's 16 ms per create.

So this handler:
- lends each request a thread from a small pool instead of starting one. The request still has
  its sync thread to itself, as Django requires (asgiref waits for a cancelled hop's thread work
  before the request ends, so a returned thread is idle); a thread that served a request keeps its
  database connection between requests as WSGI threads do, `close_old_connections` at each
  request's start and end applying CONN_MAX_AGE as usual;
- runs the hooks of Django's own middleware listed in `LOOP_HOOKS` on the event loop: they only
  read and write the request and the response (headers, cookies, lazy objects), except in the
  cases each entry names, where the hook may reach the database or read a request body, and keeps
  its thread hop. Only those exact classes: a subclass may add blocking work.

The hooks run unchanged (the same methods, in the same order, with the same arguments), so the
security headers, CSRF, sessions, locale and messages behave as before; only the thread differs.

- renders a view's response where the view ran, rather than in a hop of its own: Django's async
  handler renders a response that has a `render` method (every DRF response) with one more
  `sync_to_async` after the view, unless that method is a coroutine function. A sync view's
  response is rendered on the view's own thread, right after it (what Django would do next there),
  and the JSON of an async view's DRF response on the loop (JSONRenderer: `json.dumps`, no I/O).
  Measured on a create (production settings, engine apart): the hop cost 0.3 ms of the broker's
  11.6 ms. Not when a middleware has `process_template_response`: it runs between the two.
- sends `request_started` and `request_finished` without a hop of their own when their receivers
  are Django's per-thread ones (`PER_THREAD_RECEIVERS`: they check, close and reset the database
  connections and caches of the thread they run on): `request_started`'s run on the request's
  thread just before the request's first work there, in the same hop, and `response.close()` (which
  sends `request_finished`) runs on the loop when the request did no work on its thread at all
  (its thread's connections are then as the last request that used them left them, closed or
  checked). Any other receiver, a response with resources to close, or a cache whose `close()`
  does I/O: Django's hops, as before. With the API's checks of a key off the request's thread
  (`realtime.api.ViewSet.initial_async`), measured together (production settings, engine apart,
  SQLite, two brokers side by side, load 3.8-5.4): broker CPU per create 10.65 -> 10.32 ms, per
  create + DELETE 21.37 -> 19.58 ms.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core import signals
from django.core.cache import caches, close_caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import reset_urlconf
from django.db import close_old_connections, reset_queries
from django.http import HttpRequest, HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.locale import LocaleMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import set_script_prefix
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from .guards import ApiRequestGuardMiddleware

# Idle request threads kept for the next requests; a burst beyond this starts (and then ends)
# threads of its own, as Django does for every request.
IDLE_REQUEST_THREADS = 8


def _never(*args: Any) -> bool:
    return False


def _session_saved(request: HttpRequest, response: HttpResponseBase) -> bool:
    # SessionMiddleware.process_response writes to the session store only in this case.
    session = getattr(request, "session", None)
    return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


def _messages_stored(request: HttpRequest, response: HttpResponseBase) -> bool:
    # MessageMiddleware.process_response reads and writes the storage (the session) only then.
    storage = getattr(request, "_messages", None)
    return storage is not None and bool(storage.used or storage.added_new)


def _csrf_in_session(*args: Any) -> bool:
    return bool(settings.CSRF_USE_SESSIONS)


def _csrf_view_checks_body(request: HttpRequest, callback: Any, *args: Any) -> bool:
    # CsrfViewMiddleware.process_view reads the form body (request.POST) only for an unsafe method
    # on a view that is not exempt (the API's views are): that read keeps its thread.
    if settings.CSRF_USE_SESSIONS:
        return True
    return not (
        getattr(request, "csrf_processing_done", False)
        or getattr(callback, "csrf_exempt", False)
        or request.method in ("GET", "HEAD", "OPTIONS", "TRACE")
    )


@dataclass(frozen=True)
class LoopHooks:
    """When a middleware's hooks may block (and so keep their thread hop)."""

    request_blocks: Callable[[HttpRequest], bool] = _never
    response_blocks: Callable[[HttpRequest, HttpResponseBase], bool] = _never


LOOP_HOOKS: dict[type, LoopHooks] = {
    ApiRequestGuardMiddleware: LoopHooks(),
    SecurityMiddleware: LoopHooks(),
    SessionMiddleware: LoopHooks(response_blocks=_session_saved),
    LocaleMiddleware: LoopHooks(),
    CommonMiddleware: LoopHooks(),
    CsrfViewMiddleware: LoopHooks(request_blocks=_csrf_in_session, response_blocks=_csrf_in_session),
    AuthenticationMiddleware: LoopHooks(),
    MessageMiddleware: LoopHooks(response_blocks=_messages_stored),
    XFrameOptionsMiddleware: LoopHooks(),
}


async def _call(blocks: bool, hook: Callable[..., Any], *args: Any) -> Any:
    if blocks:
        return await sync_to_async(hook, thread_sensitive=True)(*args)
    return hook(*args)


def _on_the_loop(middleware: Any, hooks: LoopHooks) -> Callable[[HttpRequest], Awaitable[HttpResponseBase]]:
    """`MiddlewareMixin.__acall__`, with each hook called in place unless `hooks` says it blocks."""
    process_request = getattr(middleware, "process_request", None)
    process_response = getattr(middleware, "process_response", None)
    get_response = middleware.get_response

    async def acall(request: HttpRequest) -> HttpResponseBase:
        response = None
        if process_request is not None:
            response = await _call(hooks.request_blocks(request), process_request, request)
        response = response or await get_response(request)
        if process_response is not None:
            response = await _call(hooks.response_blocks(request, response), process_response, request, response)
        return response

    return acall


# Renderers whose `render` only encodes (no template, no database): safe on the event loop.
LOOP_RENDERERS = frozenset({JSONRenderer})


def _render_now(response: Any) -> None:
    """Render `response` here, and leave Django's handler an async no-op to await in its place."""
    response.render()

    async def rendered() -> Any:
        # The class's own (no-op now) render again, for any later caller and for pickling.
        del response.render
        return response

    response.render = rendered


def _renders_on_the_loop(response: Any) -> bool:
    return (
        isinstance(response, Response)
        and type(getattr(response, "accepted_renderer", None)) in LOOP_RENDERERS
        and not getattr(response, "_post_render_callbacks", None)
    )


# Django's own receivers of the request signals, which act on the thread (and context) they run in.
PER_THREAD_RECEIVERS = {
    signals.request_started: frozenset({reset_queries, close_old_connections}),
    signals.request_finished: frozenset({close_old_connections, close_caches, reset_urlconf}),
}


class RequestThread(ThreadPoolExecutor):
    """One request's sync thread: notes whether the request ran anything on it, and runs the
    `request_started` receivers held back for it before the request's first work there."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="request")
        self.used = False
        self.started: Callable[[], object] | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.used = True
        started, self.started = self.started, None
        if started is not None:
            work = functools.partial(fn, *args, **kwargs)

            def started_then(work: Callable[[], Any] = work, started: Callable[[], object] = started) -> Any:
                started()
                return work()

            return super().submit(started_then)
        return super().submit(fn, *args, **kwargs)


_request_thread: ContextVar[RequestThread | None] = ContextVar("request_thread", default=None)


def _per_thread(signal: Any, sender: type) -> bool:
    """Whether `signal`'s receivers for `sender` are only Django's own per-thread ones."""
    sync_receivers, async_receivers = signal._live_receivers(sender)
    return not async_receivers and set(sync_receivers) <= PER_THREAD_RECEIVERS[signal]


def _closes_in_memory(closer: Any) -> bool:
    """Whether a response's resource closer only closes what lives in memory: the request's own
    `close` (added to every response) when no uploaded file is open; its body, which Django's
    `handle` closes on the loop anyway. Files and streams keep Django's hop."""
    request = getattr(closer, "__self__", None)
    return (
        isinstance(request, HttpRequest)
        and getattr(closer, "__func__", None) is type(request).close
        and not getattr(request, "_files", None)
    )


@functools.cache
def _caches_close_in_memory() -> bool:
    # `close_caches` (request_finished) closes every cache; memcached's close is network I/O.
    return all(type(caches[alias]).close is BaseCache.close or isinstance(caches[alias], LocMemCache) for alias in settings.CACHES)


class _RequestThreads:
    """Single-thread executors lent to one request at a time."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.idle: collections.deque[RequestThread] = collections.deque()
        self.lock = threading.Lock()

    def lend(self) -> RequestThread:
        with self.lock:
            if self.idle:
                return self.idle.pop()
        return RequestThread()

    def give_back(self, executor: RequestThread) -> None:
        executor.used, executor.started = False, None
        with self.lock:
            if len(self.idle) < self.keep:
                self.idle.append(executor)
                return
        executor.shutdown(wait=False)


class RealtimeASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.request_threads = _RequestThreads(IDLE_REQUEST_THREADS)

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async)
        if not is_async:
            return
        # Django wraps each middleware in convert_exception_to_response (functools.wraps, so
        # `__wrapped__` is the middleware); each middleware's get_response is the next wrapper.
        handler: Any = self._middleware_chain  # type: ignore[attr-defined]  # not in django-stubs
        while (middleware := getattr(handler, "__wrapped__", None)) is not None:
            hooks = LOOP_HOOKS.get(type(middleware))
            if hooks is not None and getattr(middleware, "async_mode", False):
                middleware.__acall__ = _on_the_loop(middleware, hooks)
            handler = getattr(middleware, "get_response", None)

    def make_view_atomic(self, view: Any) -> Any:
        view = super().make_view_atomic(view)
        if self._template_response_middleware:  # type: ignore[attr-defined]  # their hooks run before rendering
            return view
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_view_rendered(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                response = await view(request, *args, **kwargs)
                if _renders_on_the_loop(response):
                    _render_now(response)
                return response

            return async_view_rendered

        @functools.wraps(view)
        def view_rendered(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            response = view(request, *args, **kwargs)
            if callable(getattr(response, "render", None)):
                _render_now(response)
            return response

        return view_rendered

    def adapt_method_mode(self, is_async: bool, method: Any, *args: Any, **kwargs: Any) -> Any:
        if is_async and getattr(method, "__func__", None) is CsrfViewMiddleware.process_view:

            async def process_view(request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any) -> Any:
                return await _call(_csrf_view_checks_body(request, callback), method, request, callback, callback_args, callback_kwargs)

            return process_view
        return super().adapt_method_mode(is_async, method, *args, **kwargs)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's `ASGIHandler.handle` (5.2), sending the two request signals as the module's
        docstring says; everything else is Django's, line for line."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        await self._request_started(scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None
            body_file.close()
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return

        async def process_request(request: HttpRequest, send: Any) -> HttpResponseBase:
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass
            return response

        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass

        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            assert response is not None
            await self._close(response)

        body_file.close()

    async def _request_started(self, scope: dict[str, Any]) -> None:
        thread = _request_thread.get()
        if thread is None or not _per_thread(signals.request_started, self.__class__):
            await signals.request_started.asend(sender=self.__class__, scope=scope)
            return
        thread.started = functools.partial(signals.request_started.send, sender=self.__class__, scope=scope)

    async def _close(self, response: HttpResponseBase) -> None:
        thread = _request_thread.get()
        if (
            thread is None
            or thread.used
            or not all(map(_closes_in_memory, response._resource_closers))  # type: ignore[attr-defined]  # not in django-stubs
            or not _per_thread(signals.request_finished, getattr(response, "_handler_class", None) or self.__class__)
            or not _caches_close_in_memory()
        ):
            await sync_to_async(response.close)()
            return
        thread.started = None
        response.close()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)  # Django's refusal
        executor = self.request_threads.lend()
        context = ThreadSensitiveContext()
        try:
            async with context:
                # The request's thread, as Django's ThreadSensitiveContext() would start on first use.
                # Not ThreadSensitiveContext(executor=...): a task the request started and that
                # outlives it (a create whose client left, idempotency.py) must still get a thread
                # afterwards, as with Django's context, where asgiref's refuses.
                SyncToAsync.context_to_thread_executor[context] = executor
                token = _request_thread.set(executor)
                try:
                    await self.handle(scope, receive, send)
                finally:
                    _request_thread.reset(token)
                    # Taken back before the context exits, which would shut the executor down.
                    SyncToAsync.context_to_thread_executor.pop(context, None)
        finally:
            self.request_threads.give_back(executor)
