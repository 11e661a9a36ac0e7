"""`/api/realtime/webhooks`: thin DRF views over `webhooks.services` (docs/webhooks.md).

An API key manages the endpoints it made (they hear about its calls only); staff with the model
permissions manage every endpoint (theirs hear about every call); local mode is staff's.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from ..auth.authentication import request_principal
from ..auth.principals import Principal
from ..exceptions import RealtimeError
from ..pagination import SeedPagination
from ..serializers import represent
from . import openapi, services
from .models import WebhookEndpoint, WebhookMessage
from .serializers import (
    DeliveryQuerySerializer,
    DeliverySerializer,
    EndpointInputSerializer,
    EndpointSerializer,
    EndpointWithSecretSerializer,
    RotateInputSerializer,
)


class DeliveryPending(RealtimeError):
    status = 409
    code = "delivery_pending"


class WebhookAccess(BasePermission):
    """API keys (their own endpoints), local mode, and staff with the endpoint model's permissions."""

    ACTIONS = {"GET": "view", "HEAD": "view", "OPTIONS": "view", "POST": "change", "PATCH": "change", "PUT": "change", "DELETE": "delete"}

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.auth if isinstance(request.auth, Principal) else None
        if principal is None and request.successful_authenticator is None:
            raise exceptions.NotAuthenticated(_("Authentication required: send an API key as 'Authorization: Bearer <key>'."))
        if principal is not None and principal.kind in ("api_key", "local"):
            return True
        verb = "add" if getattr(view, "action", "") == "create" else self.ACTIONS.get(request.method or "GET", "change")
        permission = f"realtime.{verb}_webhookendpoint"
        if principal is None or principal.kind != "staff" or not request.user.has_perm(permission):
            self.message = _("Webhook endpoints are managed with an API key, or by staff with the permission %(permission)s.") % {
                "permission": permission
            }
            return False
        return True


class DeliveryPagination(SeedPagination):
    default_limit = 50
    max_limit_setting = "REALTIME_EVENTS_MAX_LIMIT"


@openapi.webhooks
class WebhookViewSet(GenericViewSet):
    """Webhook endpoints, their secrets, and their delivery log."""

    permission_classes = [WebhookAccess]
    # Any character but "/": a lookup of anything else must reach our JSON 404, not Django's page.
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[WebhookEndpoint]:
        principal = request_principal(self.request)
        endpoints = WebhookEndpoint.objects.select_related("api_key").order_by("-created_at", "-id")
        # A key sees its own endpoints only: another key's is a 404, as another key's call is.
        return endpoints if principal.api_key is None else endpoints.filter(api_key=principal.api_key)

    def get_object(self) -> WebhookEndpoint:
        pk = str(self.kwargs.get("pk", ""))
        if not pk.isascii() or not pk.isdigit() or len(pk) > 18:
            raise exceptions.NotFound()
        return super().get_object()

    def list(self, request: Request) -> Response:
        endpoints = list(self.get_queryset())
        return Response({"success": True, "data": EndpointSerializer(endpoints, many=True).data, "count": len(endpoints)})

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response({"success": True, "webhook": represent(EndpointSerializer, self.get_object())})

    def create(self, request: Request) -> Response:
        serializer = EndpointInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = services.endpoint_create(**serializer.validated_data, api_key=request_principal(request).api_key)
        return Response({"success": True, "webhook": represent(EndpointWithSecretSerializer, endpoint)}, status=201)

    def partial_update(self, request: Request, pk: str) -> Response:
        endpoint = self.get_object()
        serializer = EndpointInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        endpoint = services.endpoint_update(endpoint=endpoint, changes=dict(serializer.validated_data))
        return Response({"success": True, "webhook": represent(EndpointSerializer, endpoint)})

    def destroy(self, request: Request, pk: str) -> Response:
        self.get_object().delete()
        return Response({"success": True, "message": _("Webhook endpoint deleted")})

    @action(detail=True, methods=["post"])
    def rotate_secret(self, request: Request, pk: str) -> Response:
        endpoint = self.get_object()
        serializer = RotateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = services.endpoint_rotate_secret(endpoint=endpoint, overlap_hours=serializer.validated_data.get("overlap_hours"))
        return Response({"success": True, "webhook": represent(EndpointWithSecretSerializer, endpoint)})

    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str) -> Response:
        message = services.send_test(endpoint=self.get_object())
        return Response({"success": True, "delivery": represent(DeliverySerializer, message)}, status=202)

    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, pk: str) -> Response:
        paginator = DeliveryPagination()
        paginator.window(request)
        query = DeliveryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        messages = WebhookMessage.objects.filter(endpoint=self.get_object()).order_by("-created_at", "-id")
        if "status" in query.validated_data:
            messages = messages.filter(status=query.validated_data["status"])
        page = paginator.paginate_queryset(messages, request, view=self)
        return paginator.get_paginated_response(DeliverySerializer(page, many=True).data)

    @action(detail=True, methods=["post"], url_path=r"deliveries/(?P<message_id>[^/]+)/resend")
    def resend(self, request: Request, pk: str, message_id: str) -> Response:
        endpoint = self.get_object()
        message = WebhookMessage.objects.filter(endpoint=endpoint, message_id=message_id[:40]).first()
        if message is None:
            raise exceptions.NotFound()
        if not services.resend(message=message):
            raise DeliveryPending(_("This delivery is still being sent or retried."), details={"id": message.message_id})
        return Response({"success": True, "delivery": represent(DeliverySerializer, message)}, status=202)
