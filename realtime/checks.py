"""`manage.py check`: configured model names that OpenAI is about to shut down."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register
from django.utils import timezone

from .catalogue import SHUTDOWNS

# Time enough to change a setting and deploy before the day calls would be re-routed or refused.
NOTICE = timedelta(days=30)


@register(Tags.compatibility)
def models_shutting_down(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    today = timezone.now().date()
    configured = {"REALTIME_DEFAULT_MODEL": settings.REALTIME_DEFAULT_MODEL}
    configured |= {f"REALTIME_MODEL_ALIASES[{alias!r}]": target for alias, target in settings.REALTIME_MODEL_ALIASES.items()}
    warnings: list[CheckMessage] = []
    for name, model in configured.items():
        shutdown = SHUTDOWNS.get(model)
        if shutdown is None or shutdown.date - today > NOTICE:
            continue
        successor = settings.REALTIME_MODEL_SUCCESSORS.get(shutdown.family)
        warnings.append(
            Warning(
                f"{name} is {model!r}, which OpenAI shuts down on {shutdown.date.isoformat()}.",
                hint=f"Point it at {successor!r}." if successor else "Point it at a model that is not being shut down.",
                id="realtime.W001",
            )
        )
    return warnings
