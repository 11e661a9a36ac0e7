"""Input serializers (what we accept) and output serializers (exactly the documented shapes).

Output serializers are shared by the REST API and the WebSocket pushes, so a client can apply a
push to what it fetched.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from . import sdp, sessions
from .exceptions import InvalidInput, PayloadTooLarge, RealtimeError
from .models import Call, CallEvent, SipRoute

_shared: dict[type[serializers.BaseSerializer], serializers.BaseSerializer] = {}


def represent(serializer_class: type[serializers.BaseSerializer], instance: Any) -> dict[str, Any]:
    """`serializer_class(instance).data` without rebuilding the serializer's fields every time.

    A ModelSerializer introspects its model each time one is created, which costs more than the
    serialising itself; output serializers keep no per-object state, so one shared instance (used
    read-only) serves every call. This is on every push and every call setup.
    """
    serializer = _shared.get(serializer_class) or _shared.setdefault(serializer_class, serializer_class())
    return serializer.to_representation(instance)


class UnixTimestampField(serializers.Field):
    """Datetimes as Unix seconds, as in the seed."""

    def to_representation(self, value: datetime) -> int:
        return int(value.timestamp())


# --- input ----------------------------------------------------------------------------------


class SdpField(serializers.Field):
    """An SDP offer given as a JSON string, a form field, or an uploaded file (curl -F sdp=@offer.sdp)."""

    def to_internal_value(self, data: Any) -> str:
        if hasattr(data, "read"):
            if data.size > settings.REALTIME_MAX_SDP_BYTES:
                raise PayloadTooLarge(_("sdp: the offer exceeds %(n)d bytes.") % {"n": settings.REALTIME_MAX_SDP_BYTES})
            try:
                data = data.read().decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput("sdp", _("must be UTF-8 text."), code="invalid_sdp") from None
        return sdp.validate_offer(data)


class SessionField(serializers.Field):
    """A session config as a JSON object, or (multipart) a string holding one."""

    def to_internal_value(self, data: Any) -> sessions.SessionConfig:
        if hasattr(data, "read"):
            data = data.read().decode("utf-8", errors="replace")
        if isinstance(data, str):
            try:
                data = json.loads(data) if data.strip() else {}
            except ValueError:
                raise InvalidInput("session", _("must be a JSON object.")) from None
        return sessions.parse_session(data)


class CallCreateInputSerializer(serializers.Serializer):
    sdp = SdpField()
    session = SessionField(required=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise InvalidInput(unknown[0][:100], _("unknown parameter."))
        values = super().to_internal_value(data)
        if "session" not in values:
            # Not setdefault: its argument, a whole session parsed, would be built for every create.
            values["session"] = sessions.parse_session({})
        return values


class TimeField(serializers.Field):
    """A moment as Unix seconds (`1734700000`, `1734700000.5`) or ISO 8601 (`2024-12-20T13:06:40Z`;
    without an offset, UTC)."""

    def to_internal_value(self, data: Any) -> datetime:
        text = str(data).strip()
        try:
            return datetime.fromtimestamp(float(text), tz=UTC)
        except (ValueError, OverflowError, OSError):
            pass
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+", 1) if "T" in text else text)
        except ValueError:
            raise serializers.ValidationError(_("give Unix seconds or an ISO 8601 date and time.")) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def to_representation(self, value: datetime) -> int:
        return int(value.timestamp())


# `ordering` values: each sorts by the column named, and the id breaks ties (a total order the
# cursor resumes in). Duration, cost and latency orders hold the calls that have that figure.
CALL_ORDERINGS = ("created_at", "-created_at", "duration", "-duration", "cost", "-cost", "latency", "-latency")


class CallListQuerySerializer(serializers.Serializer):
    """The list's (and the export's) filters; paging is `realtime.pagination`'s. Any other
    parameter is refused by name (a misspelt filter would otherwise widen the answer unnoticed)."""

    # Handled elsewhere (paging), still known here.
    PAGING: tuple[str, ...] = ("limit", "offset")

    # A field named like Field.source (the attribute path): DRF allows it, the stubs do not.
    source = serializers.ChoiceField(choices=Call.Source.choices, required=False)  # type: ignore[assignment]
    status = serializers.ChoiceField(choices=Call.Status.choices, required=False)
    created_after = TimeField(required=False, help_text="Calls created at or after this moment (Unix seconds or ISO 8601).")
    created_before = TimeField(required=False, help_text="Calls created before this moment (Unix seconds or ISO 8601).")
    model = serializers.CharField(max_length=100, required=False, help_text="The model asked for, as asked (an alias included).")
    voice = serializers.CharField(max_length=40, required=False)
    end_reason = serializers.ChoiceField(choices=Call.EndReason.choices, required=False)
    api_key = serializers.CharField(
        max_length=40, required=False, help_text="The calls of the API key with this prefix (`iap_…`, as the admin shows it)."
    )
    min_duration = serializers.FloatField(min_value=0, max_value=10**9, required=False, help_text="Seconds.")
    max_duration = serializers.FloatField(min_value=0, max_value=10**9, required=False, help_text="Seconds.")
    min_cost = serializers.DecimalField(max_digits=14, decimal_places=6, min_value=0, required=False, help_text="US dollars.")
    min_latency = serializers.IntegerField(
        min_value=0, max_value=10**9, required=False, help_text="Milliseconds: calls whose turn latency p95 is at least this."
    )
    caller = serializers.CharField(max_length=255, required=False, help_text="Phone calls from this caller (number or its beginning).")
    q = serializers.CharField(
        max_length=200,
        required=False,
        help_text="A call id or upstream id (or its beginning), a caller number, or words said in the call (all of them).",
    )
    ordering = serializers.ChoiceField(choices=CALL_ORDERINGS, required=False, default="-created_at")
    # The `next_cursor` of the previous page: the next page without counting past rows.
    cursor = serializers.CharField(max_length=200, required=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields) - set(self.PAGING))
            if unknown:
                names = ", ".join(name[:50] for name in unknown[:10])
                raise RealtimeError(
                    _("unknown parameter: %(names)s.") % {"names": names}, details={"field": unknown[0][:100], "unknown": unknown[:10]}
                )
        return super().to_internal_value(data)


class CallExportQuerySerializer(CallListQuerySerializer):
    """The export's parameters: the list's filters and ordering, and the file format (every row)."""

    PAGING = ()

    format = serializers.ChoiceField(choices=("csv", "jsonl"), default="csv")
    cursor = None  # type: ignore[assignment]


class EventListQuerySerializer(serializers.Serializer):
    event_type = serializers.CharField(max_length=80, required=False)


# --- output ---------------------------------------------------------------------------------


class CallMetricsLatencySerializer(serializers.Serializer):
    """Turn latency in milliseconds, from the caller stopping to the assistant's first audio; null before the first turn."""

    p50 = serializers.IntegerField(allow_null=True)
    p95 = serializers.IntegerField(allow_null=True)
    max = serializers.IntegerField(allow_null=True)


class CallMetricsTalkSerializer(serializers.Serializer):
    """Seconds each side spoke."""

    caller = serializers.FloatField()
    assistant = serializers.FloatField()


class CallMetricsSerializer(serializers.Serializer):
    """Conversation quality measured from the call's sideband, updated as turns complete (docs/quality.md)."""

    turns = serializers.IntegerField()
    latency_ms = CallMetricsLatencySerializer()
    interruptions = serializers.IntegerField()
    talk_seconds = CallMetricsTalkSerializer()
    silence_seconds = serializers.FloatField()
    latency_histogram = serializers.DictField(
        child=serializers.IntegerField(),
        required=False,
        help_text="Turns per latency bucket, keyed by the bucket's upper bound in milliseconds (`inf` past 5000); "
        "buckets without a turn left out. Absent from figures measured before it existed.",
    )


class CallSerializer(serializers.ModelSerializer):
    created_at = UnixTimestampField()
    answered_at = UnixTimestampField(allow_null=True)
    ended_at = UnixTimestampField(allow_null=True)
    # Blank until the call ends; a read-only model field would lose `allow_blank` (and the schema the "").
    end_reason = serializers.ChoiceField(choices=Call.EndReason.choices, allow_blank=True, read_only=True)
    duration_seconds = serializers.SerializerMethodField()
    error = serializers.CharField(source="error_message")
    cost_usd = serializers.SerializerMethodField()
    sip = serializers.SerializerMethodField()
    metrics = serializers.SerializerMethodField()

    class Meta:
        model = Call
        fields = [
            "call_id",
            "model",
            "status",
            "created_at",
            "voice",
            "modalities",
            "duration_seconds",
            "answered_at",
            "ended_at",
            "end_reason",
            "source",
            "upstream_id",
            "upstream_model",
            "instructions",
            "temperature",
            "max_output_tokens",
            "max_duration_seconds",
            "error",
            "usage",
            "cost_usd",
            "has_transcript",
            "sip",
            "metrics",
        ]
        read_only_fields = fields

    def get_sip(self, call: Call) -> dict[str, Any] | None:
        """Phone calls only: who called which number (untrusted text from the SIP headers), the route, the outcome."""
        if call.source != Call.Source.SIP:
            return None
        return {
            "caller": call.sip_caller,
            "called": call.sip_called,
            "route_id": call.sip_route_id,
            "status_code": call.sip_status,
            "transferred_to": call.transferred_to or None,
        }

    @extend_schema_field(CallMetricsSerializer(allow_null=True))
    def get_metrics(self, call: Call) -> dict[str, Any] | None:
        """Conversation quality measured from the sideband (realtime.quality); null before the first event measured."""
        return call.metrics or None

    def get_duration_seconds(self, call: Call) -> int | None:
        return None if call.duration_seconds is None else round(call.duration_seconds)

    def get_cost_usd(self, call: Call) -> float | None:
        # A JSON number (USD, 6 decimals); null when the model has no price in the table.
        return None if call.cost_usd is None else round(float(call.cost_usd), 6)


class TranscriptEntrySerializer(serializers.Serializer):
    item_id = serializers.CharField()
    role = serializers.CharField()
    text = serializers.CharField(allow_blank=True)
    timestamp = serializers.IntegerField()


class CallCreatedSerializer(serializers.ModelSerializer):
    """The seed's create response (flat), wrapped with `success` by the view."""

    created_at = UnixTimestampField()
    session = serializers.SerializerMethodField()

    class Meta:
        model = Call
        fields = ["call_id", "sdp_answer", "model", "status", "created_at", "session"]
        read_only_fields = fields

    def get_session(self, call: Call) -> dict[str, Any]:
        return {"model": call.model, "voice": call.voice, "modalities": call.modalities}


def created_body(call: Call, *, warnings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The body of a 201 to POST /api/realtime/calls (stored as such for idempotent replays),
    with `warnings` (a model OpenAI will shut down) only when there are some."""
    body = {"success": True, **represent(CallCreatedSerializer, call)}
    if warnings:
        body["warnings"] = warnings
    return body


class CallEventSerializer(serializers.ModelSerializer):
    call_id = serializers.CharField(source="call.call_id")
    timestamp = UnixTimestampField(source="created_at")
    event_data = serializers.JSONField(source="data")

    class Meta:
        model = CallEvent
        fields = ["id", "call_id", "event_type", "timestamp", "event_data", "actor"]
        read_only_fields = fields


# --- phone calls (SIP) ------------------------------------------------------------------------


class TransferInputSerializer(serializers.Serializer):
    """`POST /api/realtime/calls/{id}/transfer`: where to send the caller (a SIP REFER's Refer-To)."""

    target_uri = serializers.CharField(max_length=255)

    def validate_target_uri(self, value: str) -> str:
        from sipmessage import URI

        value = value.strip()
        try:
            uri = URI.parse(value)
        except ValueError:
            uri = None
        if uri is None or uri.scheme not in ("sip", "sips", "tel") or any(c in value for c in '<>\r\n"') or not uri.user:
            raise InvalidInput("target_uri", _("must be a sip: or tel: URI naming someone (sip:agent@example.com, tel:+33123456789)."))
        return value


# What an operator sets on a route (API and admin alike).
ROUTE_FIELDS = [
    "name",
    "position",
    "enabled",
    "called_pattern",
    "caller_pattern",
    "header_name",
    "header_pattern",
    "action",
    "session",
    "reject_status",
]


class SipRouteSerializer(serializers.ModelSerializer):
    created_at = UnixTimestampField()

    class Meta:
        model = SipRoute
        fields = ["id", *ROUTE_FIELDS, "created_at"]
        read_only_fields = fields


class SipRouteInputSerializer(serializers.ModelSerializer):
    """A route as an operator writes it; its session is checked as a WebRTC call's would be."""

    class Meta:
        model = SipRoute
        fields = ROUTE_FIELDS

    def validate_session(self, value: Any) -> dict[str, Any]:
        return validate_route_session(value)

    def validate_reject_status(self, value: int) -> int:
        if not 300 <= value <= 699:
            raise serializers.ValidationError(_("must be a SIP failure status, from 300 to 699."))
        return value

    def validate_header_name(self, value: str) -> str:
        if value and not all(c.isalnum() or c in "-_." for c in value):
            raise serializers.ValidationError(_("must be a SIP header name (letters, digits, '-')."))
        return value


def validate_route_session(value: Any) -> dict[str, Any]:
    """A route's session, in either shape POST /api/realtime/calls takes; refused as that endpoint would."""
    if value in (None, ""):
        return {}
    config = sessions.parse_session(value)
    detection = ((config.upstream.get("audio") or {}).get("input") or {}).get("turn_detection") or {}
    refused = sorted(set(detection) & SIP_REFUSED_TURN_DETECTION)
    if refused:
        # OpenAI's SIP accept answers these with 400 "Unknown parameter" (WebRTC takes them).
        raise InvalidInput(f"session.turn_detection.{refused[0]}", _("is not accepted for phone calls by OpenAI."))
    return dict(value)


SIP_REFUSED_TURN_DETECTION = frozenset({"threshold", "prefix_padding_ms", "silence_duration_ms"})
