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

from .indexes import PostgreSQLPartialIndex

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


# Conditions of indexes partial on PostgreSQL (see PostgreSQLPartialIndex): read for active
# calls only (each condition says what its readers ask, so a query by id that also checks the
# status is not offered a walk of every active call in its place), or for a key's calls only.
_ACTIVE = models.Q(status="active")
_CLAIMABLE = _ACTIVE & ~models.Q(upstream_id="")
_WITH_DEADLINE = _ACTIVE & models.Q(deadline_at__isnull=False)
_IDLE_SINCE = _ACTIVE & (models.Q(last_activity_at__isnull=False) | models.Q(answered_at__isnull=False))
_WITH_KEY = models.Q(api_key__isnull=False)


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
        REJECTED = "rejected", _("Rejected (SIP)")
        MISSED = "missed", _("Caller hung up before the answer (SIP)")

    # Source states from which a call may still be ended.
    ENDABLE = (Status.PENDING, Status.ACTIVE)

    # Unique through Meta's `call_id_once`: one index for both equality and prefix search.
    call_id = models.CharField(_("call id"), max_length=40, default=new_call_id, editable=False)
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
    # When an active call reaches its own maximum duration (its answer + `max_duration_seconds`),
    # set by the transition that answers it: the sweeper reads only the calls past it, from an index.
    deadline_at = models.DateTimeField(_("ends at the latest"), null=True, blank=True, editable=False)
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

    # Conversation quality measured from the sideband (turn latency, interruptions, talk time):
    # `{"turns", "latency_ms": {"p50", "p95", "max"}, "interruptions", "talk_seconds": {...}}`.
    # Empty until the monitor has seen a turn.
    metrics = models.JSONField(_("quality metrics"), default=dict, blank=True)
    # Two figures of `metrics` as columns, so lists filter and sort on them through an index.
    latency_p95_ms = models.PositiveIntegerField(_("turn latency p95 (ms)"), null=True, blank=True)
    latency_max_ms = models.PositiveIntegerField(_("slowest turn (ms)"), null=True, blank=True)

    # Phone calls (source sip). Caller and called come from the From/To headers OpenAI relays: they
    # are whatever the carrier (or anyone reaching the trunk) put there, untrusted text.
    sip_caller = models.CharField(_("caller"), max_length=255, blank=True, default="")
    sip_called = models.CharField(_("called"), max_length=255, blank=True, default="")
    sip_headers = models.JSONField(_("SIP headers"), default=list, blank=True)
    # The route that decided the call (null once the route is deleted; the call.incoming event keeps its name).
    sip_route = models.ForeignKey(
        "SipRoute", verbose_name=_("SIP route"), null=True, blank=True, on_delete=models.SET_NULL, related_name="calls", db_index=False
    )
    # The SIP status sent when the call was rejected.
    sip_status = models.PositiveSmallIntegerField(_("SIP status"), null=True, blank=True)
    # The last transfer target sent to OpenAI (SIP REFER).
    transferred_to = models.CharField(_("transferred to"), max_length=255, blank=True, default="")

    # When each kind of personal data was purged (retention) or erased (a person's request): the
    # conditional UPDATE that sets one is the claim that purges that kind once (realtime/retention.py).
    sdp_purged_at = models.DateTimeField(_("SDP purged at"), null=True, blank=True, editable=False)
    session_purged_at = models.DateTimeField(_("session purged at"), null=True, blank=True, editable=False)
    transcripts_purged_at = models.DateTimeField(_("transcripts purged at"), null=True, blank=True, editable=False)
    caller_numbers_purged_at = models.DateTimeField(_("caller numbers purged at"), null=True, blank=True, editable=False)
    events_purged_at = models.DateTimeField(_("events purged at"), null=True, blank=True, editable=False)

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
            # GET /api/realtime/calls?status=...; the admin's status filter; the sweeper's pending
            # and active calls; the concurrency check.
            models.Index(fields=["status", "-created_at", "-id"], name="call_status_recent_idx"),
            # The admin's model, voice, end reason and source filters, newest first: a filtered page
            # reads its 50 rows from the index instead of sorting every match.
            models.Index(fields=["model", "-created_at", "-id"], name="call_model_recent_idx"),
            models.Index(fields=["voice", "-created_at", "-id"], name="call_voice_recent_idx"),
            # Live calls have no end reason: on PostgreSQL this one holds the calls that have one
            # (see PostgreSQLPartialIndex; filters ask for a reason, which implies it is not blank).
            PostgreSQLPartialIndex(
                fields=["end_reason", "-created_at", "-id"], condition=~models.Q(end_reason=""), name="call_reason_recent_idx"
            ),
            models.Index(fields=["source", "-created_at", "-id"], name="call_source_recent_idx"),
            # Admin search by upstream id (exact or prefix) and lookups from upstream events (rtc_...).
            # The operator class lets PostgreSQL answer a prefix LIKE from it; other databases ignore it.
            models.Index(fields=["upstream_id"], name="call_upstream_idx", opclasses=["varchar_pattern_ops"]),
            # GET /api/realtime/calls with an API key: that key's calls, newest first. Calls made
            # without a key (staff, local mode) are never looked up by key: on PostgreSQL their
            # transitions write neither of these two (a query naming a key implies the condition).
            PostgreSQLPartialIndex(fields=["api_key", "-created_at", "-id"], condition=_WITH_KEY, name="call_key_recent_idx"),
            # ... and by status (an integrator's active calls): without it, a page of a rare status
            # walked the key's whole history through the index above (242 ms at 1M calls for a
            # status none of the key's calls had).
            PostgreSQLPartialIndex(
                fields=["api_key", "status", "-created_at", "-id"], condition=_WITH_KEY, name="call_key_status_recent_idx"
            ),
            # monitors claiming active calls whose lease is free or expired (services.monitor_claim).
            # The id last: the claim's order, so that among thousands of free calls (all with no
            # lease) PostgreSQL reads ten, not all, to sort them.
            # These three are read for active calls only: on PostgreSQL they hold only those
            # (PostgreSQLPartialIndex), so that a call's insert, end and every later update write
            # none of them; on SQLite, every call (the status leading).
            PostgreSQLPartialIndex(fields=["status", "monitor_lease_until", "id"], condition=_CLAIMABLE, name="call_monitor_claim_idx"),
            # the sweeper: active calls past their maximum duration, and calls idle since a time
            # (last speech, else the answer), oldest first: a pass reads the calls that are due,
            # however many are live and however long the history.
            PostgreSQLPartialIndex(fields=["status", "deadline_at"], condition=_WITH_DEADLINE, name="call_deadline_idx"),
            PostgreSQLPartialIndex(fields=["status", "last_activity_at", "answered_at"], condition=_IDLE_SINCE, name="call_idle_idx"),
            # the sweeper: ended calls whose upstream side is not confirmed closed (unconfirmed
            # hangups: few, whatever the history). Ended calls that never reached upstream have no
            # upstream id and sort first, so `upstream_id > ''` skips them with one seek. The
            # condition has no parameter, so SQLite can prove a query implies it.
            models.Index(
                fields=["upstream_id", "hangup_retry_at", "ended_at"],
                condition=models.Q(upstream_closed_at__isnull=True, ended_at__isnull=False),
                name="call_hangup_retry_idx",
            ),
            # the admin's cost column, sorted; the list's `min_cost` and `ordering=cost` (the id
            # makes the order total, so a cursor resumes inside a run of equal costs).
            models.Index(fields=["cost_usd", "id"], name="call_cost_idx"),
            # the list's `min_duration`/`max_duration` and `ordering=duration`: calls with a duration.
            models.Index(fields=["duration_seconds", "id"], condition=models.Q(duration_seconds__isnull=False), name="call_duration_idx"),
            # the list's `caller` (and a phone number in `q`): equal or starting with (see call_upstream_idx).
            models.Index(fields=["sip_caller"], name="call_caller_idx", opclasses=["varchar_pattern_ops"]),
            # deleting a route sets its calls' sip_route to null (one UPDATE by route): only the
            # calls a route decided (WebRTC calls have none, and their transitions write nothing here).
            PostgreSQLPartialIndex(fields=["sip_route"], condition=models.Q(sip_route__isnull=False), name="call_sip_route_idx"),
            # `min_latency` list filters and the dashboard's slowest calls: only measured calls.
            models.Index(fields=["latency_p95_ms", "id"], condition=models.Q(latency_p95_ms__isnull=False), name="call_latency_p95_idx"),
            models.Index(fields=["latency_max_ms"], condition=models.Q(latency_max_ms__isnull=False), name="call_latency_max_idx"),
            # the retention purge: ended calls, oldest first, whose data of one kind is still there
            # (each index empties as the purge catches up). The conditions have no parameter, so
            # SQLite can prove the purge's query implies them.
            *(
                models.Index(
                    fields=["ended_at"],
                    condition=models.Q(**{f"{kind}_purged_at__isnull": True}, ended_at__isnull=False),
                    name=f"call_purge_{kind}_idx"[:30],
                )
                for kind in ("sdp", "session", "transcripts", "caller_numbers", "events")
            ),
            # (The retention purge deleting whole calls reads call_recent_idx: see retention.due.)
        ]
        constraints = [
            # The operator class lets PostgreSQL answer a prefix LIKE (the admin's id search) from
            # the unique index too, rather than from a second index on the same column that every
            # insert and update would also write; other databases ignore it.
            models.UniqueConstraint(fields=["call_id"], opclasses=["varchar_pattern_ops"], name="call_id_once"),
        ]
        permissions = [
            ("end_call", _("Can end calls")),
            ("transfer_call", _("Can transfer phone calls")),
            ("erase_call_data", _("Can erase a call's personal data")),
        ]

    def __str__(self) -> str:
        return self.call_id


class Totals(models.Model):
    """The amounts both kinds of counters add up."""

    calls = models.BigIntegerField(_("calls"), default=0)
    # Ended calls with a duration, and the sum of their durations (the average is their quotient).
    duration_calls = models.BigIntegerField(_("calls with a duration"), default=0)
    duration_seconds = models.FloatField(_("duration (s)"), default=0.0)
    input_tokens = models.BigIntegerField(_("input tokens"), default=0)
    output_tokens = models.BigIntegerField(_("output tokens"), default=0)
    # Millionths of a dollar: whole numbers add up exactly on every database (calls keep 6 decimals).
    cost_micros = models.BigIntegerField(_("cost (millionths of USD)"), default=0)

    class Meta:
        abstract = True


class CallCounter(Totals):
    """Running totals behind the statistics, so they cost the same at any history size.

    One row per scope (`all` calls, or `key:<id>` for the calls an API key made), dimension and
    value: `total/""` (every call, events, tokens, cost), `status/<status>` (calls now in it;
    `ended` also sums durations), `end_reason/...`, `model/...`, `voice/...`, `source/...` and
    `upstream_model/...` (calls, tokens, cost). `services` changes them in the same transaction as
    the calls they count (one upsert per transition), so they always equal a recount of the rows
    (`selectors.stats_recount`); `bench/seed_scale.py` writes them from that recount.
    """

    scope = models.CharField(_("scope"), max_length=32)
    dimension = models.CharField(_("dimension"), max_length=20)
    value = models.CharField(_("value"), max_length=100, blank=True, default="")
    events = models.BigIntegerField(_("events"), default=0)

    class Meta:
        verbose_name = _("call counter")
        verbose_name_plural = _("call counters")
        constraints = [models.UniqueConstraint(fields=["scope", "dimension", "value"], name="call_counter_once")]

    def __str__(self) -> str:
        return f"{self.scope} {self.dimension}={self.value}"


class CallBucket(Totals):
    """Running totals per hour, behind the dashboard's figures over a period (`realtime.counters`).

    One row per hour (UTC, the hour the call was created in), dimension and value: `total/""`
    (calls, answered, failed, durations, tokens, cost), `end_reason/...` (calls),
    `upstream_model/...` (the same amounts as `total`, per model) and `duration/<upper bound>`
    (ended calls per duration bucket: the histogram behind the p95). A call stays counted in the
    hour it was created in, whatever it does later. `services` changes them in the same
    transaction and statement as `CallCounter`; a period's figures are sums over its hours (at most
    24 x 31 rows per series for a month), whatever the history.
    """

    dimension = models.CharField(_("dimension"), max_length=20)
    hour = models.DateTimeField(_("hour"))
    value = models.CharField(_("value"), max_length=100, blank=True, default="")
    answered = models.BigIntegerField(_("answered calls"), default=0)
    failed = models.BigIntegerField(_("failed calls"), default=0)

    class Meta:
        verbose_name = _("hourly call counter")
        verbose_name_plural = _("hourly call counters")
        # Dimension first: each dashboard query reads one or a few dimensions over a range of hours.
        constraints = [models.UniqueConstraint(fields=["dimension", "hour", "value"], name="call_bucket_once")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.dimension}={self.value}"


class SipRoute(models.Model):
    """What to do with an incoming phone call: the first enabled route (by position) that matches decides.

    Patterns are shell-style (`*`, `?`, `[...]`, case-insensitive) and match the whole value:
    the called and caller URIs and numbers (`sip:+3312@host`, `+3312`), or one SIP header's value.
    An empty pattern matches anything.
    """

    class Action(models.TextChoices):
        ACCEPT = "accept", _("Accept")
        REJECT = "reject", _("Reject")

    name = models.CharField(_("name"), max_length=100)
    position = models.PositiveIntegerField(_("position"), default=100, help_text=_("Routes are tried in increasing position."))
    enabled = models.BooleanField(_("enabled"), default=True)
    called_pattern = models.CharField(_("called number or URI"), max_length=255, blank=True, default="")
    caller_pattern = models.CharField(_("caller number or URI"), max_length=255, blank=True, default="")
    header_name = models.CharField(_("SIP header"), max_length=100, blank=True, default="")
    header_pattern = models.CharField(_("SIP header value"), max_length=255, blank=True, default="")
    action = models.CharField(_("action"), max_length=10, choices=Action.choices, default=Action.ACCEPT)
    # The session to accept with, in either shape POST /api/realtime/calls takes (validated on save).
    session = models.JSONField(_("session"), default=dict, blank=True)
    reject_status = models.PositiveSmallIntegerField(_("SIP status when rejecting"), default=603)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("SIP route")
        verbose_name_plural = _("SIP routes")
        ordering = ("position", "id")
        indexes = [
            # every incoming call: the enabled routes in order (a handful of rows).
            models.Index(fields=["position", "id"], condition=models.Q(enabled=True), name="siproute_order_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class WebhookDelivery(models.Model):
    """A webhook already handled, by its `webhook-id`: OpenAI retries, and a replay must do nothing."""

    webhook_id = models.CharField(_("webhook id"), max_length=100, unique=True)
    event_type = models.CharField(_("event type"), max_length=80)
    received_at = models.DateTimeField(_("received at"), default=timezone.now)

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        indexes = [
            # forgetting deliveries older than OpenAI's 72-hour retry window.
            models.Index(fields=["received_at"], name="webhook_received_idx"),
        ]

    def __str__(self) -> str:
        return self.webhook_id


class CallEvent(models.Model):
    """One thing that happened to a call. Append-only: never updated, never deleted, except by the
    retention purge and a person's erase request, which replace personal data by a marker (and
    delete a whole call's events with it once it expires), through `realtime.services`."""

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
            # the admin's event list filtered by type, newest first.
            models.Index(fields=["event_type", "-id"], name="event_type_recent_idx"),
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


class Heartbeat(models.Model):
    """A background loop saying it is alive: one row per process and role, overwritten on each beat.

    Written by the monitor supervisors (role `monitors`, each tick) and the sweepers (role
    `sweeper`, each pass); read by the health endpoint (realtime/health.py).
    """

    class Role(models.TextChoices):
        MONITORS = "monitors", _("call monitors")
        SWEEPER = "sweeper", _("sweeper")

    role = models.CharField(_("role"), max_length=16, choices=Role.choices)
    owner = models.CharField(_("process"), max_length=100)
    beat_at = models.DateTimeField(_("last beat"), default=timezone.now)

    class Meta:
        verbose_name = _("heartbeat")
        verbose_name_plural = _("heartbeats")
        constraints = [models.UniqueConstraint(fields=["role", "owner"], name="heartbeat_one_per_process")]
        # "Who beat since t", "the last beat" and "forget old beats", per role: one index.
        indexes = [models.Index(fields=["role", "beat_at"], name="heartbeat_role_beat")]

    def __str__(self) -> str:
        return f"{self.role} {self.owner}"


class AccessAudit(models.Model):
    """Who changed access, when and from where: API keys created, revoked, expired; staff locked out.

    Append-only: written by `realtime.services`, read-only in the admin, never deleted.
    """

    class Action(models.TextChoices):
        KEY_CREATED = "key_created", _("API key created")
        KEY_REVOKED = "key_revoked", _("API key revoked")
        KEY_EXPIRED = "key_expired", _("API key expired")
        STAFF_LOCKED_OUT = "staff_locked_out", _("Staff sign-in locked out")
        CALL_DATA_ERASED = "call_data_erased", _("Call data erased")

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
    # The call whose data was erased, by its public id: text, so the record outlives the call.
    call_ref = models.CharField(_("call"), max_length=40, blank=True, default="")

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


class CallWord(models.Model):
    """A word said in a call (either side, from its transcript), for the list's `q` search.

    An inverted index kept as a plain table, so it is the same on SQLite and PostgreSQL: a word
    finds its calls through one index seek. `services` adds a call's words when it stores the
    transcript events, in the same transaction; deleting the call deletes them.
    """

    call = models.ForeignKey(Call, verbose_name=_("call"), on_delete=models.CASCADE, related_name="words", db_index=False)
    word = models.CharField(_("word"), max_length=40)

    class Meta:
        verbose_name = _("transcript word")
        verbose_name_plural = _("transcript words")
        constraints = [models.UniqueConstraint(fields=["word", "call"], name="call_word_once")]
        # Deleting a call (retention, erase) deletes its words through this index.
        indexes = [models.Index(fields=["call"], name="call_word_call_idx")]

    def __str__(self) -> str:
        return self.word


# Outgoing webhooks live in their own package; their models belong to this app.
from .webhooks.models import WebhookEndpoint, WebhookMessage  # noqa: E402, F401
