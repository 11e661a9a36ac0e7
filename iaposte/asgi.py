"""ASGI entry point: HTTP (Django) and WebSocket (Channels), served by uvicorn (`manage.py serve`).

Importing it starts nothing: background work (call monitors, the sweeper) and the local engine
are started by the command that hosts the server, on the server's loop (see serve.py).
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
# Django is set up before anything imports models (the consumers do); as get_asgi_application()
# does, with Django's handler trimmed of its per-request thread work (realtime/handler.py).
django.setup(set_prefix=False)

from realtime.handler import RealtimeASGIHandler  # noqa: E402

django_asgi_app = RealtimeASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from realtime.auth.websocket import BrowserOriginValidator  # noqa: E402
from realtime.proxy import TrustedProxyMiddleware  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402

# Outermost: the site sees the real client behind the trusted proxy (realtime/proxy.py).
application = TrustedProxyMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # Browsers send Origin on WebSockets and no CORS protects them: refuse other sites' pages.
            # A handshake without Origin is a server-side client; the consumers then require its key.
            "websocket": BrowserOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
