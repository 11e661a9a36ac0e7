from __future__ import annotations

from django.urls import re_path

from . import consumers

# Like the REST paths, these work with and without a trailing slash.
websocket_urlpatterns = [
    re_path(r"^ws/realtime/calls/?$", consumers.CallsConsumer.as_asgi()),
    re_path(r"^ws/realtime/calls/(?P<call_id>[A-Za-z0-9_]{1,40})/?$", consumers.CallConsumer.as_asgi()),
    # Anything else is refused at the handshake (403), rather than the router's ValueError (a 500
    # and a traceback per request).
    re_path(r"", consumers.NoSuchFeed.as_asgi()),
]
