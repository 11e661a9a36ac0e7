"""Webhook endpoints and their deliveries (the outbox). Declarative; `outbox` and `dispatcher` write them."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

SECRET_PREFIX = "whsec_"
MESSAGE_PREFIX = "msg_"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def new_message_id() -> str:
    return MESSAGE_PREFIX + secrets.token_urlsafe(18)


class EventType(models.TextChoices):
    """What an endpoint may subscribe to: the call's lifecycle events, under the same names."""

    CALL_CREATED = "call.created", _("call created")
    CALL_ANSWERED = "call.answered", _("call answered")
    CALL_ENDED = "call.ended", _("call ended")
    CALL_FAILED = "call.failed", _("call failed")
    CALL_TRANSFERRED = "call.transferred", _("call transferred")
    CALL_TRANSCRIPT_COMPLETED = "call.transcript.completed", _("call transcript completed")
    CALL_INCOMING = "call.incoming", _("phone call incoming")
    CALL_REJECTED = "call.rejected", _("phone call rejected")


# Sent when asked for ("send a test event"), to whatever the endpoint subscribes to.
TEST_EVENT = "webhook.test"
# The disabled_reason of an endpoint turned off by its owner (not a failure: no admin notice).
DISABLED_BY_HAND = "disabled by hand"


class WebhookEndpoint(models.Model):
    """Where an integrator wants to hear about calls, and the secret that signs what we send."""

    url = models.URLField(_("URL"), max_length=2000)
    description = models.CharField(_("description"), max_length=200, blank=True)
    events = models.JSONField(_("event types"), default=list)
    # An endpoint made with an API key hears only about that key's calls; one made by staff (no
    # key) hears about every call.
    api_key = models.ForeignKey(
        "realtime.ApiKey",
        verbose_name=_("API key"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="webhook_endpoints",
    )
    # Kept in clear: every delivery is signed with it (HMAC), as Standard Webhooks require.
    secret = models.CharField(_("secret"), max_length=100, default=new_secret)
    # After a rotation the previous secret signs too, until previous_secret_until.
    previous_secret = models.CharField(_("previous secret"), max_length=100, blank=True)
    previous_secret_until = models.DateTimeField(_("previous secret valid until"), null=True, blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    disabled_at = models.DateTimeField(_("disabled at"), null=True, blank=True)
    disabled_reason = models.CharField(_("disabled because"), max_length=200, blank=True)
    # Failed attempts in a row, and when the first of them happened (a success resets both).
    failure_streak = models.PositiveIntegerField(_("failures in a row"), default=0)
    failing_since = models.DateTimeField(_("failing since"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("webhook endpoint")
        verbose_name_plural = _("webhook endpoints")
        ordering = ["-created_at", "-id"]
        indexes = [
            # the outbox write of each call event: enabled endpoints (few) of one key, and the unscoped ones.
            models.Index(fields=["api_key"], condition=models.Q(enabled=True), name="webhook_enabled_key_idx"),
        ]

    def __str__(self) -> str:
        return self.url

    def signing_secrets(self, *, now: datetime | None = None) -> list[str]:
        """The secrets that sign a delivery now: the current one, and the previous one during the overlap."""
        moment = now or timezone.now()
        if self.previous_secret and self.previous_secret_until and self.previous_secret_until > moment:
            return [self.secret, self.previous_secret]
        return [self.secret]


class WebhookMessage(models.Model):
    """One event for one endpoint: the outbox row, written with the event, kept as the delivery log.

    `message_id` is the `webhook-id` header, the same on every attempt (the receiver's dedupe key).
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        DELIVERED = "delivered", _("delivered")
        FAILED = "failed", _("failed")

    message_id = models.CharField(_("message id"), max_length=40, unique=True, default=new_message_id)
    endpoint = models.ForeignKey(WebhookEndpoint, verbose_name=_("endpoint"), on_delete=models.CASCADE, related_name="messages")
    call = models.ForeignKey("realtime.Call", verbose_name=_("call"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    event_type = models.CharField(_("event type"), max_length=80)
    payload = models.JSONField(_("payload"))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    # When the next attempt is due (pending only); a dispatcher's claim moves it a lease ahead.
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True, default=timezone.now)
    # Retried until then; "send again" moves it.
    give_up_at = models.DateTimeField(_("retried until"))
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_attempt_at = models.DateTimeField(_("last attempt at"), null=True, blank=True)
    response_status = models.PositiveIntegerField(_("response status"), null=True, blank=True)
    latency_ms = models.PositiveIntegerField(_("latency (ms)"), null=True, blank=True)
    error = models.CharField(_("error"), max_length=500, blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)

    class Meta:
        verbose_name = _("outgoing webhook delivery")
        verbose_name_plural = _("outgoing webhook deliveries")
        ordering = ["-created_at", "-id"]
        indexes = [
            # the dispatcher's claim: pending deliveries by due time (the delivered and failed
            # history is not in this index, so it costs what the backlog is).
            models.Index(fields=["next_attempt_at"], condition=models.Q(status="pending"), name="webhookmsg_due_idx"),
            # an endpoint's delivery log, newest first (API and admin); also its pending rows on re-enabling.
            models.Index(fields=["endpoint", "-created_at", "-id"], name="webhookmsg_endpoint_idx"),
            # the admin's delivery log, newest first (filters walk it, a page at a time).
            models.Index(fields=["-created_at", "-id"], name="webhookmsg_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.message_id}"
