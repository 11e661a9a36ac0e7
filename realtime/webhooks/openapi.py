"""The OpenAPI description of `/api/realtime/webhooks` (drf-spectacular), in the shapes of `..openapi`."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers

from ..openapi import BAD_QUERY, COMMON_ERRORS, PAGING, _envelope, _error
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
