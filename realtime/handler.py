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
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.locale import LocaleMiddleware
from django.middleware.security import SecurityMiddleware
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


class _RequestThreads:
    """Single-thread executors lent to one request at a time."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.idle: collections.deque[ThreadPoolExecutor] = collections.deque()
        self.lock = threading.Lock()

    def lend(self) -> ThreadPoolExecutor:
        with self.lock:
            if self.idle:
                return self.idle.pop()
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")

    def give_back(self, executor: ThreadPoolExecutor) -> None:
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
                try:
                    await self.handle(scope, receive, send)
                finally:
                    # Taken back before the context exits, which would shut the executor down.
                    SyncToAsync.context_to_thread_executor.pop(context, None)
        finally:
            self.request_threads.give_back(executor)
