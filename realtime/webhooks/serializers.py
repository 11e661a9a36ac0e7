"""Input and output serializers of `/api/realtime/webhooks` (output: the documented shapes)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import serializers

from ..exceptions import InvalidInput
from ..serializers import UnixTimestampField
from . import guard
from .models import EventType, WebhookEndpoint, WebhookMessage

# --- input ----------------------------------------------------------------------------------


class EndpointInputSerializer(serializers.Serializer):
    """An endpoint as an integrator registers or changes it (PATCH: any subset)."""

    url = serializers.URLField(max_length=2000)
    events = serializers.ListField(child=serializers.ChoiceField(choices=EventType.choices), allow_empty=False, max_length=len(EventType))
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise InvalidInput(str(unknown[0])[:100], _("unknown parameter."))
        return super().to_internal_value(data)

    def validate_url(self, value: str) -> str:
        try:
            guard.check(value)
        except guard.Refused as exc:
            raise InvalidInput("url", str(exc), code="webhook_url_refused") from None
        return value

    def validate_events(self, value: list[str]) -> list[str]:
        # Kept in the catalogue's order, each once.
        return [e for e in EventType.values if e in value]


class RotateInputSerializer(serializers.Serializer):
    """How long the previous secret keeps signing (default REALTIME_WEBHOOK_SECRET_OVERLAP_HOURS; 0: not at all)."""

    overlap_hours = serializers.FloatField(min_value=0, max_value=7 * 24, required=False)


class DeliveryQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=WebhookMessage.Status.choices, required=False)


# --- output ---------------------------------------------------------------------------------


class EndpointSerializer(serializers.ModelSerializer):
    created_at = UnixTimestampField()
    disabled_at = UnixTimestampField(allow_null=True)
    api_key = serializers.SerializerMethodField()

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "events",
            "api_key",
            "enabled",
            "disabled_at",
            "disabled_reason",
            "failure_streak",
            "created_at",
        ]
        read_only_fields = fields

    def get_api_key(self, endpoint: WebhookEndpoint) -> str | None:
        """The prefix of the key whose calls it hears about; null: every call (made by staff)."""
        return endpoint.api_key.prefix if endpoint.api_key_id and endpoint.api_key else None


class EndpointWithSecretSerializer(EndpointSerializer):
    """Create and rotate answers: the only ones that show the secret."""

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="message_id")
    call_id = serializers.SerializerMethodField()
    created_at = UnixTimestampField()
    last_attempt_at = UnixTimestampField(allow_null=True)
    next_attempt_at = UnixTimestampField(allow_null=True)
    delivered_at = UnixTimestampField(allow_null=True)
    retry_until = UnixTimestampField(source="give_up_at")
    # Plain text in the schema: "pending", "delivered" or "failed" (an enum would collide with the calls' status).
    status = serializers.CharField()

    class Meta:
        model = WebhookMessage
        fields = [
            "id",
            "event_type",
            "call_id",
            "status",
            "attempts",
            "created_at",
            "last_attempt_at",
            "next_attempt_at",
            "retry_until",
            "response_status",
            "latency_ms",
            "error",
            "delivered_at",
        ]
        read_only_fields = fields

    def get_call_id(self, message: WebhookMessage) -> str | None:
        return message.payload.get("data", {}).get("call_id") if isinstance(message.payload, dict) else None
