"""ASGI entry point: HTTP (Django) and WebSocket (Channels) in one server (daphne)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from realtime import monitor  # noqa: E402

websocket_urlpatterns: list = []
if settings.LOCALREALTIME_ENABLED:
    from localrealtime.routing import websocket_urlpatterns as engine_websockets

    # The embedded engine's sideband socket (/v1/realtime?call_id=...), beside its HTTP surface.
    websocket_urlpatterns += engine_websockets

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)})

# daphne has no ASGI lifespan: the embedded default starts its call monitors here (see monitor.py).
monitor.start_embedded()
