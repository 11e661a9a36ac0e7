from __future__ import annotations

from django.urls import path

from .consumers import SidebandConsumer

websocket_urlpatterns = [path("v1/realtime", SidebandConsumer.as_asgi())]
