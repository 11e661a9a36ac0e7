"""The one code path that changes webhook endpoints (API and admin alike)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import ApiKey
from . import outbox
from .models import DISABLED_BY_HAND, WebhookEndpoint, WebhookMessage, new_secret


def endpoint_create(*, url: str, events: list[str], api_key: ApiKey | None, description: str = "", enabled: bool = True) -> WebhookEndpoint:
    """Register an endpoint (its URL already checked by the caller); it gets a fresh secret."""
    return WebhookEndpoint.objects.create(url=url, events=events, api_key=api_key, description=description, enabled=enabled)


@transaction.atomic
def endpoint_update(*, endpoint: WebhookEndpoint, changes: dict[str, Any]) -> WebhookEndpoint:
    """Change an endpoint. Enabling it again clears its failure streak and makes the deliveries
    that waited for it due now; disabling it by hand says so."""
    now = timezone.now()
    enabling = changes.get("enabled") is True and not endpoint.enabled
    if changes.get("enabled") is False and endpoint.enabled:
        changes = {**changes, "disabled_at": now, "disabled_reason": DISABLED_BY_HAND}
    if enabling:
        changes = {**changes, "disabled_at": None, "disabled_reason": "", "failure_streak": 0, "failing_since": None}
    for name, value in changes.items():
        setattr(endpoint, name, value)
    endpoint.save()
    if enabling:
        outbox.resume(endpoint=endpoint, at=now)
    return endpoint


def endpoint_rotate_secret(*, endpoint: WebhookEndpoint, overlap_hours: float | None = None) -> WebhookEndpoint:
    """A new secret; the current one keeps signing too (both signatures sent) for the overlap."""
    hours = settings.REALTIME_WEBHOOK_SECRET_OVERLAP_HOURS if overlap_hours is None else overlap_hours
    now = timezone.now()
    endpoint.previous_secret = endpoint.secret if hours > 0 else ""
    endpoint.previous_secret_until = now + timedelta(hours=hours) if hours > 0 else None
    endpoint.secret = new_secret()
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"])
    return endpoint


def send_test(*, endpoint: WebhookEndpoint) -> WebhookMessage:
    with transaction.atomic():
        return outbox.enqueue_test(endpoint=endpoint, at=timezone.now())


def resend(*, message: WebhookMessage) -> bool:
    with transaction.atomic():
        return outbox.resend(message=message, at=timezone.now())
