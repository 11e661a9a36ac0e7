"""Security headers Django's SecurityMiddleware does not set: a content security policy and a
permissions policy. (nosniff, Referrer-Policy, COOP, HSTS and X-Frame-Options come from Django's
own middleware and settings.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase

# The demo page needs the microphone; nothing here needs a camera or a location.
PERMISSIONS_POLICY = "microphone=(self), camera=(), geolocation=(), payment=(), usb=()"


def content_security_policy(request: HttpRequest) -> str:
    try:
        host = request.get_host()
    except DisallowedHost:
        # The answer to a request for an unknown host is an error page: it opens no socket.
        host = ""
    # 'self' covers same-origin ws:/wss: in current browsers; naming them keeps older ones working.
    sockets = f" ws://{host} wss://{host}" if host else ""
    return settings.REALTIME_CSP.replace(" {websocket_origins}", sockets).replace("{websocket_origins}", sockets.strip())


class SecurityHeadersMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        response = self.get_response(request)
        if isinstance(response, HttpResponseBase):
            return self._add_headers(request, response)
        return self._add_headers_later(request, response)

    async def _add_headers_later(self, request: HttpRequest, response: Awaitable[HttpResponseBase]) -> HttpResponseBase:
        return self._add_headers(request, await response)

    @staticmethod
    def _add_headers(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        # A view that needs a different policy sets its own; never override it.
        response.headers.setdefault("Content-Security-Policy", content_security_policy(request))
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response
