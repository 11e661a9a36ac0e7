"""ASGI entry point: HTTP (Django) and WebSocket (Channels) in one server (daphne).

With the embedded engine enabled, `/v1/...` is the local stand-in for OpenAI: another service
that shares this process (and its event loop, where its WebRTC peers live) but not the site.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
# Django is set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from realtime import monitor  # noqa: E402
from realtime.auth import BrowserOriginValidator  # noqa: E402
from realtime.proxy import TrustedProxyMiddleware  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402


def _http() -> Any:
    if not settings.LOCALREALTIME_ENABLED:
        return django_asgi_app
    from localrealtime.views import PREFIX
    from localrealtime.views import application as engine_app

    async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
        app = engine_app if scope["path"].startswith(PREFIX) else django_asgi_app
        await app(scope, receive, send)

    return http


def _websocket() -> Any:
    # Browsers send Origin on WebSockets and no CORS protects them: refuse other sites' pages.
    # A handshake without Origin is a server-side client; the consumers then require its key.
    site = BrowserOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
    if not settings.LOCALREALTIME_ENABLED:
        return site
    from localrealtime.routing import websocket_urlpatterns as engine_websockets
    from localrealtime.views import PREFIX

    # The embedded engine's sideband socket (/v1/realtime?call_id=...) is another service's: it
    # authenticates with its own Bearer key, outside our site's origin and session rules.
    engine = URLRouter(engine_websockets)

    async def websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
        app = engine if scope["path"].startswith(PREFIX) else site
        await app(scope, receive, send)

    return websocket


# Outermost: the engine and the site alike see the real client behind the trusted proxy.
application = TrustedProxyMiddleware(ProtocolTypeRouter({"http": _http(), "websocket": _websocket()}))

# daphne has no ASGI lifespan: the embedded default starts its call monitors here (see monitor.py).
monitor.start_embedded()
