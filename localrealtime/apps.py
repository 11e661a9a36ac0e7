from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings


class LocalRealtimeConfig(AppConfig):
    name = "localrealtime"
    verbose_name = "Local Realtime engine"

    def ready(self) -> None:
        if settings.LOCALREALTIME_ENABLED:
            from .ice import restrict_host_addresses

            restrict_host_addresses(settings.LOCALREALTIME_ICE_ADDRESSES)
