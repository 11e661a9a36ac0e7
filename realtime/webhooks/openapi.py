"""The OpenAPI description of `/api/realtime/webhooks` (drf-spectacular), in the shapes of `..openapi`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    OpenApiWebhook,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers

from ..openapi import BAD_QUERY, COMMON_ERRORS, PAGING, _envelope, _error
from ..serializers import CallSerializer, TranscriptEntrySerializer
from .models import TEST_EVENT, EventType
from .serializers import (
    DeliverySerializer,
    EndpointInputSerializer,
    EndpointSerializer,
    EndpointWithSecretSerializer,
    RotateInputSerializer,
)

Endpoint = _envelope("WebhookEnvelope", webhook=EndpointSerializer())
EndpointWithSecret = _envelope("WebhookWithSecretEnvelope", webhook=EndpointWithSecretSerializer())
EndpointPage = _envelope("WebhookPage", data=EndpointSerializer(many=True), count=serializers.IntegerField())
Delivery = _envelope("WebhookDeliveryEnvelope", delivery=DeliverySerializer())
DeliveryPage = _envelope("WebhookDeliveryPage", data=DeliverySerializer(many=True), count=serializers.IntegerField())
NOT_FOUND = {404: _error("No such webhook endpoint (or not yours).", "not_found", "Not found.")}
BAD_ENDPOINT = {
    400: _error(
        "A bad endpoint, or a URL that resolves to a private address.",
        "webhook_url_refused",
        "url: its host 10.0.0.5 resolves to 10.0.0.5, a private, loopback, link-local or reserved address; "
        "webhooks go to public addresses only.",
        {"field": "url"},
    )
}
CREATE_EXAMPLE = {"url": "https://example.com/hooks/calls", "events": ["call.created", "call.ended", "call.failed"]}
CREATED_EXAMPLE = {
    "success": True,
    "webhook": {
        "id": 1,
        "url": "https://example.com/hooks/calls",
        "description": "",
        "events": ["call.created", "call.ended", "call.failed"],
        "api_key": "iap_AbCdEfGh",
        "enabled": True,
        "disabled_at": None,
        "disabled_reason": "",
        "failure_streak": 0,
        "created_at": 1734700000,
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    },
}

webhooks = extend_schema_view(
    list=extend_schema(operation_id="realtime_webhooks_list", summary="Webhook endpoints", responses={200: EndpointPage, **COMMON_ERRORS}),
    retrieve=extend_schema(summary="One webhook endpoint", responses={200: Endpoint, **NOT_FOUND, **COMMON_ERRORS}),
    create=extend_schema(
        summary="Register a webhook endpoint",
        description="The answer shows the signing secret (`whsec_…`) this once. Deliveries follow Standard Webhooks; see docs/webhooks.md.",
        request=EndpointInputSerializer,
        responses={201: EndpointWithSecret, **BAD_ENDPOINT, **COMMON_ERRORS},
        examples=[
            OpenApiExample("Register", value=CREATE_EXAMPLE, request_only=True),
            OpenApiExample("Registered", value=CREATED_EXAMPLE, response_only=True, status_codes=[201]),
        ],
    ),
    partial_update=extend_schema(
        summary="Change a webhook endpoint",
        description="Any of `url`, `events`, `description`, `enabled`. Enabling a disabled endpoint sends what waited for it.",
        request=EndpointInputSerializer,
        responses={200: Endpoint, **BAD_ENDPOINT, **NOT_FOUND, **COMMON_ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete a webhook endpoint",
        description="Its pending deliveries and its log go with it.",
        responses={200: _envelope("WebhookDeleted", message=serializers.CharField()), **NOT_FOUND, **COMMON_ERRORS},
    ),
    rotate_secret=extend_schema(
        summary="Rotate the signing secret",
        description="A new secret (shown this once); the previous one keeps signing too (both signatures are sent) for `overlap_hours`.",
        request=RotateInputSerializer,
        responses={200: EndpointWithSecret, **NOT_FOUND, **COMMON_ERRORS},
    ),
    test=extend_schema(
        summary="Send a test event",
        description="Queues a `webhook.test` delivery to this endpoint.",
        request=None,
        responses={202: Delivery, **NOT_FOUND, **COMMON_ERRORS},
    ),
    deliveries=extend_schema(
        summary="The endpoint's delivery log",
        description="Newest first: status, attempts, next retry, last response code, latency, error.",
        parameters=[*PAGING, OpenApiParameter("status", OpenApiTypes.STR, enum=["pending", "delivered", "failed"])],
        responses={200: DeliveryPage, **BAD_QUERY, **NOT_FOUND, **COMMON_ERRORS},
    ),
    resend=extend_schema(
        summary="Send a delivery again",
        description="Under the same `webhook-id`, with a new retry window. A delivery still pending is a 409.",
        request=None,
        parameters=[OpenApiParameter("message_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The delivery's `webhook-id`.")],
        responses={
            202: Delivery,
            409: _error("Still being sent or retried.", "delivery_pending", "This delivery is still being sent or retried."),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
    ),
)


# --- What we send: the outgoing webhooks -----------------------------------------------------------
# OpenAPI 3.1's root `webhooks` section (SPECTACULAR_SETTINGS["WEBHOOKS"] imports `OUTGOING`), one
# entry per event type, described from the receiver's side: the request we POST, the answers we
# expect. drf-spectacular keeps only a webhook's body and responses; `webhook_headers` adds the
# Standard Webhooks headers to each.


class EventTypeField(serializers.CharField):
    """A payload's `type`: always this one event type (for the schema only)."""

    def __init__(self, event: str, **kwargs: Any) -> None:
        self.event = event
        super().__init__(**kwargs)


class EventTypeSchema(OpenApiSerializerFieldExtension):
    target_class = EventTypeField

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {"type": "string", "enum": [self.target.event], "description": "The event type."}


class CallWithTranscript(CallSerializer):
    """`call.transcript.completed`'s data: the call, and its transcript as `GET …/transcript` shows it."""

    transcript = TranscriptEntrySerializer(many=True)

    class Meta(CallSerializer.Meta):
        ref_name = "CallWithTranscript"
        fields = [*CallSerializer.Meta.fields, "transcript"]
        read_only_fields = fields


def _test_data() -> serializers.Serializer:
    return inline_serializer(
        name="WebhookTestData",
        fields={
            "webhook_id": serializers.IntegerField(help_text="The endpoint's id."),
            "url": serializers.URLField(),
            "events": serializers.ListField(child=serializers.CharField(), help_text="The event types it subscribes to."),
        },
    )


# (event type, what happened, what makes the schema of `data`), in the order of docs/webhooks.md.
# Factories: a field made before `type` and `timestamp` would come first in the payload's schema.
EVENTS: list[tuple[str, str, Callable[[], serializers.Serializer]]] = [
    (EventType.CALL_CREATED, "A call was recorded (before OpenAI answers).", CallSerializer),
    (EventType.CALL_ANSWERED, "OpenAI answered: the call is active.", CallSerializer),
    (EventType.CALL_ENDED, "The call ended; `data.end_reason` says why.", CallSerializer),
    (EventType.CALL_FAILED, "OpenAI refused the call or never answered.", CallSerializer),
    (EventType.CALL_TRANSFERRED, "A phone call was transferred (SIP REFER); `data.sip.transferred_to`.", CallSerializer),
    (
        EventType.CALL_TRANSCRIPT_COMPLETED,
        "A call that had a transcript ended; `data.transcript` is the conversation as `GET …/transcript` shows it at the end.",
        CallWithTranscript,
    ),
    (EventType.CALL_INCOMING, "A phone call arrived (before its SIP route decides).", CallSerializer),
    (EventType.CALL_REJECTED, "A phone call was rejected (by its route, or as busy); `data.sip.status_code`.", CallSerializer),
    (TEST_EVENT, "Sent when asked for (`POST /api/realtime/webhooks/{id}/test`).", _test_data),
]

WEBHOOK_RESPONSES = {
    "2XX": OpenApiResponse(description="Delivered: answer any 2xx quickly (do the work afterwards). The answer's body is not read."),
    "default": OpenApiResponse(
        description="Anything else (another status, a redirect, a timeout, a refused connection) is retried with exponential "
        "backoff and jitter, or after your `Retry-After`, for `REALTIME_WEBHOOK_RETRY_HOURS` (72 by default); then the "
        "delivery is marked failed and kept."
    ),
}


def _component(event: str) -> str:
    """`call.transcript.completed` → `CallTranscriptCompletedEvent`."""
    return "".join(part.capitalize() for part in event.split(".")) + "Event"


def _webhook(event: str, when: str, data: Callable[[], serializers.Serializer]) -> OpenApiWebhook:
    body = inline_serializer(
        name=_component(event),
        fields={
            "type": EventTypeField(event),
            "timestamp": serializers.IntegerField(help_text="When it happened, in Unix seconds."),
            "data": data(),
        },
    )
    to = "that endpoint" if event == TEST_EVENT else f"every enabled endpoint subscribed to `{event}`"
    return OpenApiWebhook(
        name=event,
        decorator=extend_schema(
            summary=when.split(";")[0].removesuffix("."),
            description=f"{when} We POST it, signed (Standard Webhooks), to {to}; at least once: dedupe on `webhook-id`. "
            "See docs/webhooks.md.",
            request={"application/json": body},
            responses=WEBHOOK_RESPONSES,
        ),
    )


OUTGOING = [_webhook(str(event), when, data) for event, when, data in EVENTS]

DELIVERY_HEADERS: list[dict[str, Any]] = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "The delivery's id (`msg_…`), the same on every retry of one event: dedupe on it.",
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "schema": {"type": "integer"},
        "description": "Unix seconds of this attempt; refuse one too far from your clock (Standard Webhooks: 5 minutes).",
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "`v1,<base64 HMAC-SHA256>` of `{webhook-id}.{webhook-timestamp}.{body}` keyed with the endpoint's secret "
        "(the bytes whose base64 follows `whsec_`); during a secret rotation, two signatures separated by a space. Verify the raw body.",
    },
]


def webhook_headers(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Postprocessing hook: the Standard Webhooks headers on every outgoing webhook."""
    for operations in result.get("webhooks", {}).values():
        for method, operation in operations.items():
            # Where an operation's parameters usually are: before its body.
            body = {key: operation.pop(key) for key in ("requestBody", "responses") if key in operation}
            operations[method] = {**operation, "parameters": DELIVERY_HEADERS, **body}
    return result
