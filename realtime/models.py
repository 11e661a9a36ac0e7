"""Calls brokered to OpenAI Realtime, and the append-only audit trail of what happened to them.

Only `realtime.services` changes these rows (see its docstring); models stay declarative.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

# What every key starts with, so a leaked key is recognisable (secret scanners, log reviews).
API_KEY_PREFIX = "iap_"
# Characters of the key kept in clear to tell keys apart in the admin and in audit events.
API_KEY_VISIBLE_CHARS = 12


def new_call_id() -> str:
    # 128 random bits: public ids must be unguessable, since they are the handle for ending a call.
    return f"call_{secrets.token_hex(16)}"


def hash_api_key(raw: str) -> str:
    # A key carries 256 random bits, so a fast hash is enough: there is nothing to brute-force,
    # unlike a password. It also lets a lookup be one indexed equality on the hash.
    return hashlib.sha256(raw.encode("utf-8", errors="surrogatepass")).hexdigest()


class ApiKey(models.Model):
    """An integrator's credential. The key itself is shown once at creation and never stored."""

    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=API_KEY_VISIBLE_CHARS, unique=True, editable=False)
    key_hash = models.CharField(_("key hash"), max_length=64, unique=True, editable=False)
    # SET_NULL: a key outlives its owner's account, so the calls it made keep their audit trail.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="realtime_api_keys",
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True, editable=False)
    # Set once, by the sweeper, when it audits the expiry and closes the key's sockets: the claim
    # that makes one process do it, once.
    expiry_handled_at = models.DateTimeField(_("expiry handled at"), null=True, blank=True, editable=False)
    # Live calls this key may hold at once: empty for the default (REALTIME_MAX_ACTIVE_CALLS_PER_KEY),
    # 0 for no limit of its own (the global cap and its fair share still apply).
    max_active_calls = models.PositiveIntegerField(
        _("maximum live calls"),
        null=True,
        blank=True,
        help_text=_("Calls this key may have in progress at once. Empty: the default setting; 0: no limit of its own."),
    )

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, at: datetime | None = None) -> bool:
        at = at or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > at)


class Call(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        ACTIVE = "active", _("Active")
        ENDED = "ended", _("Ended")
        FAILED = "failed", _("Failed")

    class Source(models.TextChoices):
        WEBRTC = "webrtc", _("WebRTC")
        SIP = "sip", _("SIP")

    class EndReason(models.TextChoices):
        API_HANGUP = "api_hangup", _("Ended through the API")
        ADMIN_HANGUP = "admin_hangup", _("Ended by support staff")
        REMOTE_HANGUP = "remote_hangup", _("Ended by the caller or the model")
        MAX_DURATION = "max_duration", _("Maximum duration reached")
        IDLE_TIMEOUT = "idle_timeout", _("Idle for too long")
        SETUP_TIMEOUT = "setup_timeout", _("Never connected")
        UPSTREAM_ERROR = "upstream_error", _("Upstream error")
        LOST = "lost", _("Lost after a restart")

    # Source states from which a call may still be ended.
    ENDABLE = (Status.PENDING, Status.ACTIVE)

    call_id = models.CharField(_("call id"), max_length=40, unique=True, default=new_call_id, editable=False)
    upstream_id = models.CharField(_("upstream id"), max_length=100, blank=True, default="")
    source = models.CharField(_("source"), max_length=10, choices=Source.choices, default=Source.WEBRTC)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PENDING)

    # What the integrator asked for, as they asked for it (seed or GA shape).
    model = models.CharField(_("model"), max_length=100)
    voice = models.CharField(_("voice"), max_length=40)
    modalities = models.JSONField(_("modalities"), default=list)
    instructions = models.TextField(_("instructions"), blank=True, default="")
    temperature = models.FloatField(_("temperature"), null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(_("max output tokens"), null=True, blank=True)
    session_requested = models.JSONField(_("session requested"), default=dict)
    # What was sent to OpenAI: the GA session after translation.
    upstream_model = models.CharField(_("upstream model"), max_length=100)
    session_upstream = models.JSONField(_("session sent upstream"), default=dict)

    # Who created it: the integrator's key, or nobody (staff, local mode). PROTECT: keys are revoked,
    # never deleted, so calls keep saying which key made them.
    api_key = models.ForeignKey(
        ApiKey, verbose_name=_("API key"), null=True, blank=True, on_delete=models.PROTECT, related_name="calls", db_index=False
    )

    sdp_offer = models.TextField(_("SDP offer"))
    sdp_answer = models.TextField(_("SDP answer"), blank=True, default="")

    created_at = models.DateTimeField(_("created at"))
    answered_at = models.DateTimeField(_("answered at"), null=True, blank=True)
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    duration_seconds = models.FloatField(_("duration (s)"), null=True, blank=True)
    # Set once OpenAI confirmed the hangup (or said the call was already gone).
    upstream_closed_at = models.DateTimeField(_("upstream closed at"), null=True, blank=True)
    # Failed upstream hangups, and when the sweeper tries again (exponential backoff).
    hangup_attempts = models.PositiveIntegerField(_("hangup attempts"), default=0)
    hangup_retry_at = models.DateTimeField(_("hangup retry at"), null=True, blank=True)
    # The limit this call runs under (the session's `max_duration_seconds`, else the setting).
    max_duration_seconds = models.PositiveIntegerField(_("maximum duration (s)"), null=True, blank=True)
    # Last speech seen from either side (sideband); idle hang-up counts from it, or from the answer.
    last_activity_at = models.DateTimeField(_("last activity at"), null=True, blank=True)
    end_reason = models.CharField(_("end reason"), max_length=20, choices=EndReason.choices, blank=True, default="")
    error_message = models.TextField(_("error"), blank=True, default="")

    # What the call consumed, summed from upstream `response.done` (and transcription) usage.
    usage = models.JSONField(_("usage"), default=dict, blank=True)
    # Totals as columns too, so statistics aggregate them in SQL.
    input_tokens = models.PositiveBigIntegerField(_("input tokens"), default=0)
    output_tokens = models.PositiveBigIntegerField(_("output tokens"), default=0)
    # Estimated from settings.REALTIME_PRICING; null when the model has no price there.
    cost_usd = models.DecimalField(_("cost (USD)"), max_digits=14, decimal_places=6, null=True, blank=True, default=Decimal("0"))
    has_transcript = models.BooleanField(_("has a transcript"), default=False)

    # The sideband monitor watching this call: one holder at a time, through a lease it renews.
    monitor_owner = models.CharField(_("monitored by"), max_length=100, blank=True, default="")
    monitor_lease_until = models.DateTimeField(_("monitor lease until"), null=True, blank=True)

    class Meta:
        verbose_name = _("call")
        verbose_name_plural = _("calls")
        ordering = ("-created_at", "-id")
        indexes = [
            # GET /api/realtime/calls without a status filter: newest first, stable pages.
            models.Index(fields=["-created_at", "-id"], name="call_recent_idx"),
            # GET /api/realtime/calls?status=...; stats' active/ended counts.
            models.Index(fields=["status", "-created_at", "-id"], name="call_status_recent_idx"),
            # stats' calls_by_model and the admin's model filter.
            models.Index(fields=["model"], name="call_model_idx"),
            # stats' calls_by_voice and the admin's voice filter.
            models.Index(fields=["voice"], name="call_voice_idx"),
            # admin search by upstream id and lookups from upstream events (rtc_...).
            models.Index(fields=["upstream_id"], name="call_upstream_idx"),
            # GET /api/realtime/calls with an API key: that key's calls, newest first.
            models.Index(fields=["api_key", "-created_at", "-id"], name="call_key_recent_idx"),
            # monitors claiming active calls whose lease is free or expired (services.monitor_claim).
            models.Index(fields=["monitor_lease_until"], condition=models.Q(status="active"), name="call_monitor_claim_idx"),
            # the sweeper: live calls past a time limit (sweeper.due_calls).
            models.Index(fields=["status", "created_at"], condition=models.Q(status__in=["pending", "active"]), name="call_live_idx"),
            # the sweeper: ended calls whose upstream hangup is still unconfirmed.
            models.Index(
                fields=["hangup_retry_at"],
                condition=models.Q(upstream_closed_at__isnull=True, status__in=["ended", "failed"]) & ~models.Q(upstream_id=""),
                name="call_hangup_retry_idx",
            ),
            # the admin's cost column, sorted.
            models.Index(fields=["cost_usd"], name="call_cost_idx"),
        ]
        permissions = [("end_call", _("Can end calls"))]

    def __str__(self) -> str:
        return self.call_id


class CallEvent(models.Model):
    """One thing that happened to a call. Append-only: never updated, never deleted."""

    class Actor(models.TextChoices):
        API = "api", _("API")
        ADMIN = "admin", _("Admin")
        UPSTREAM = "upstream", _("Upstream")
        SYSTEM = "system", _("System")

    # PROTECT: a call with an audit trail is never deleted from under it.
    call = models.ForeignKey(Call, on_delete=models.PROTECT, related_name="events", db_index=False)
    event_type = models.CharField(_("event type"), max_length=80)
    created_at = models.DateTimeField(_("time"))
    data = models.JSONField(_("data"), default=dict)
    actor = models.CharField(_("actor"), max_length=10, choices=Actor.choices)
    # The upstream `event_id` of events recorded from the sideband ("" for our own events).
    upstream_event_id = models.CharField(_("upstream event id"), max_length=64, blank=True, default="")

    class Meta:
        verbose_name = _("call event")
        verbose_name_plural = _("call events")
        ordering = ("id",)
        indexes = [
            # GET /api/realtime/calls/{id}/events: a call's events in order.
            models.Index(fields=["call", "id"], name="event_call_idx"),
            # GET /api/realtime/calls/{id}/events?event_type=...
            models.Index(fields=["call", "event_type", "id"], name="event_call_type_idx"),
        ]
        constraints = [
            # An upstream event is recorded once, even if two monitors overlap during a takeover.
            models.UniqueConstraint(
                fields=["call", "upstream_event_id"], condition=~models.Q(upstream_event_id=""), name="event_upstream_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} ({self.call_id})"


class IdempotencyKey(models.Model):
    """A create request's `Idempotency-Key`, the request it came with and the response it got.

    Scoped to who sent it (an API key, a staff member, local mode), so two integrators may pick the
    same key. Kept for settings.REALTIME_IDEMPOTENCY_TTL_SECONDS; older keys are forgotten.
    """

    scope = models.CharField(_("scope"), max_length=64)
    key = models.CharField(_("key"), max_length=255)
    request_hash = models.CharField(_("request hash"), max_length=64)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    # Null while the first request is still being served.
    response_status = models.PositiveSmallIntegerField(_("response status"), null=True, blank=True)
    response_body = models.JSONField(_("response body"), null=True, blank=True)
    response_headers = models.JSONField(_("response headers"), default=dict, blank=True)

    class Meta:
        verbose_name = _("idempotency key")
        verbose_name_plural = _("idempotency keys")
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="idempotency_key_once")]
        indexes = [
            # the sweeper forgets keys older than their time to live.
            models.Index(fields=["created_at"], name="idempotency_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key}"


class AccessAudit(models.Model):
    """Who changed access, when and from where: API keys created, revoked, expired; staff locked out.

    Append-only: written by `realtime.services`, read-only in the admin, never deleted.
    """

    class Action(models.TextChoices):
        KEY_CREATED = "key_created", _("API key created")
        KEY_REVOKED = "key_revoked", _("API key revoked")
        KEY_EXPIRED = "key_expired", _("API key expired")
        STAFF_LOCKED_OUT = "staff_locked_out", _("Staff sign-in locked out")

    action = models.CharField(_("action"), max_length=20, choices=Action.choices)
    at = models.DateTimeField(_("at"), default=timezone.now, editable=False)
    # Who did it: a staff account (kept as a name too, should the account go), the command line,
    # or the system (an expiry).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    actor = models.CharField(_("actor"), max_length=150)
    address = models.GenericIPAddressField(_("address"), null=True, blank=True)
    api_key = models.ForeignKey(ApiKey, verbose_name=_("API key"), null=True, blank=True, on_delete=models.PROTECT, related_name="audits")
    # The account a lockout is about (it may not exist: guessers try any name).
    username = models.CharField(_("user name"), max_length=150, blank=True, default="")

    class Meta:
        verbose_name = _("access audit record")
        verbose_name_plural = _("access audit records")
        ordering = ("-at", "-id")
        indexes = [
            # the admin lists the newest first.
            models.Index(fields=["-at", "-id"], name="access_audit_at_idx"),
            # one record per lockout: the last one for a user name.
            models.Index(fields=["action", "username", "at"], name="access_audit_lockout_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} ({self.actor})"
