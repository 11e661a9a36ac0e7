"""The content security policy, on every answer. (nosniff, Referrer-Policy, COOP, HSTS and
X-Frame-Options come from Django's SecurityMiddleware and settings; Permissions-Policy from
django-permissions-policy.)

Kept home-made rather than django-csp (4.0), for two behaviours it does not have: it sends the
policy on every answer, including 404 and 500 answers in local mode (django-csp leaves them out
whenever DEBUG is on, the API's JSON errors included), and the policy keeps the order it is written
in (django-csp orders directives by string hash, so each process may send them in another order).
The per-request part, naming this host's ws:/wss: origins, is one line either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase
from servestatic.middleware import ServeStaticMiddleware


def content_security_policy(request: HttpRequest) -> str:
    try:
        host = request.get_host()
    except DisallowedHost:
        # The answer to a request for an unknown host is an error page: it opens no socket.
        host = ""
    # 'self' covers same-origin ws:/wss: in current browsers; naming them keeps older ones working.
    sockets = f" ws://{host} wss://{host}" if host else ""
    return settings.REALTIME_CSP.replace(" {websocket_origins}", sockets).replace("{websocket_origins}", sockets.strip())


class ContentSecurityPolicyMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        response = self.get_response(request)
        assert isinstance(response, HttpResponseBase)
        return self._add_header(request, response)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        assert not isinstance(response, HttpResponseBase)
        return self._add_header(request, await response)

    @staticmethod
    def _add_header(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        # A view that needs a different policy sets its own; never override it.
        response.headers.setdefault("Content-Security-Policy", content_security_policy(request))
        return response


class StaticFilesMiddleware(ServeStaticMiddleware):
    """servestatic's middleware, minus a thread hop per request when it cannot serve the path.

    With autorefresh (on with DEBUG, as in `make run`), servestatic looks every request's path up
    on disk in a worker thread (asyncio.to_thread), the API's included: about 4 % of the broker's
    CPU per create, measured with py-spy. A path under none of its directories' prefixes can match
    no file (`candidate_paths_for_url` yields nothing), so such a request goes straight on.
    """

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        path = request.path_info
        if (
            self.autorefresh
            and not any(path.startswith(prefix) for _root, prefix in self.directories)
            and not request.path.startswith(settings.STATIC_URL)
        ):
            return await self.get_response(request)
        return await super().__call__(request)
