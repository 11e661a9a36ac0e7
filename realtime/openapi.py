"""The OpenAPI description of the REST API (drf-spectacular): shapes, examples, errors, auth.

The views stay plain `ViewSet`s that build their answers by hand (the seed's shapes), so their
schema is declared here, next to nothing else: `document(...)` decorates each viewset. Examples
are the seed's. Every error answer has the one shape of `realtime.exceptions.error_body`.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.urls import reverse
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers
from rest_framework.views import APIView

from .serializers import (
    CallCreatedSerializer,
    CallCreateInputSerializer,
    CallEventSerializer,
    CallExportQuerySerializer,
    CallListQuerySerializer,
    CallSerializer,
    SipRouteInputSerializer,
    SipRouteSerializer,
    TranscriptEntrySerializer,
    TransferInputSerializer,
)

SEED_SESSION = {
    "model": "gpt-4o-realtime-preview",
    "modalities": ["text", "audio"],
    "voice": "alloy",
    "instructions": "Tu es un assistant vocal utile.",
}
SEED_CALL = {
    "call_id": "call_1234567890",
    "model": "gpt-4o-realtime-preview",
    "status": "active",
    "created_at": 1734700000,
    "voice": "alloy",
    "modalities": ["text", "audio"],
    "duration_seconds": None,
}


class EnvelopeAutoSchema(AutoSchema):
    """Every answer is an envelope (`{"success": true, "data": [...], "count"}` for lists), never a
    bare array: a `list` action is not wrapped in one."""

    def _is_list_view(self, serializer: Any = None) -> bool:
        return False


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "realtime.auth.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "description": "An API key (`rtk_…`) made in the admin."}


class StaffSessionScheme(OpenApiAuthenticationExtension):
    target_class = "realtime.auth.authentication.StaffSessionAuthentication"
    name = "staffSession"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid", "description": "A staff login (with the CSRF token on writes)."}


class LocalModeScheme(OpenApiAuthenticationExtension):
    """No credentials at all: a loopback client when REALTIME_LOCAL_MODE is on (an empty requirement)."""

    target_class = "realtime.auth.authentication.LocalModeAuthentication"
    name: list[str] = []

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return []

    def get_security_requirement(self, auto_schema: Any) -> dict[str, Any]:
        return {}


class SdpFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "realtime.serializers.SdpField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {"type": "string", "description": "The caller's WebRTC SDP offer (a JSON string, a form field or a file)."}


class SessionFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "realtime.serializers.SessionField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": True,
            "description": "The session, in the seed's (beta) shape or OpenAI's GA shape; see docs/api.md.",
            "example": SEED_SESSION,
        }


class TimeFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "realtime.serializers.TimeField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {
            "oneOf": [{"type": "number"}, {"type": "string", "format": "date-time"}],
            "description": "Unix seconds, or ISO 8601 (UTC without an offset).",
        }


class UnixTimestampSchema(OpenApiSerializerFieldExtension):
    target_class = "realtime.serializers.UnixTimestampField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {"type": "integer", "description": "Unix seconds."}


Error = inline_serializer(
    name="Error",
    fields={
        "success": serializers.BooleanField(default=False),
        "error": inline_serializer(
            name="ErrorDetail",
            fields={
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "details": serializers.JSONField(allow_null=True),
            },
        ),
    },
)


def _error(description: str, code: str, message: str, details: Any = None) -> OpenApiResponse:
    example = {"success": False, "error": {"code": code, "message": message, "details": details}}
    return OpenApiResponse(Error, description=description, examples=[OpenApiExample(code, value=example, response_only=True)])


COMMON_ERRORS = {
    401: _error("No or bad credentials.", "not_authenticated", "Authentication credentials were not provided."),
    403: _error("Not allowed.", "permission_denied", "You do not have permission to perform this action."),
    429: _error("Too many requests, or too many calls in progress.", "throttled", "Request was throttled.", {"retry_after": 1}),
}
NOT_FOUND = {404: _error("No such call (or not yours).", "call_not_found", "Call not found.", {"call_id": "call_1234567890"})}
BAD_QUERY = {400: _error("A bad query parameter.", "invalid_request", "limit: must be between 1 and 100.", {"field": "limit"})}
PAGING = [
    OpenApiParameter("limit", OpenApiTypes.INT, description="Page size."),
    OpenApiParameter("offset", OpenApiTypes.INT, description="Rows to skip."),
]


def _envelope(name: str, **fields: serializers.Field) -> serializers.Serializer:
    return inline_serializer(name=name, fields={"success": serializers.BooleanField(default=True), **fields})


CallEnvelope = _envelope("CallEnvelope", call=CallSerializer())
CallEnded = _envelope("CallEnded", call=CallSerializer(), message=serializers.CharField())
CallPage = _envelope(
    "CallPage",
    data=CallSerializer(many=True),
    count=serializers.IntegerField(help_text="Calls matching in all; at most 10,000 when `count_capped`."),
    count_capped=serializers.BooleanField(required=False, help_text="Present (true) when more calls match than `count` says."),
    next_cursor=serializers.CharField(required=False, help_text="Pass as `cursor` for the next page (present after a full page)."),
)
EventPage = _envelope("EventPage", data=CallEventSerializer(many=True), count=serializers.IntegerField())
Transcript = _envelope(
    "Transcript", call_id=serializers.CharField(), data=TranscriptEntrySerializer(many=True), count=serializers.IntegerField()
)


class CreatedSchema(CallCreatedSerializer):
    """What `created_body` answers: the seed's create response, and warnings when there are some."""

    success = serializers.BooleanField(default=True)
    # The shape of get_session's dict, for the schema only (never used to serialise).
    session = inline_serializer(  # type: ignore[assignment]
        name="CallSessionSummary",
        fields={
            "model": serializers.CharField(),
            "voice": serializers.CharField(),
            "modalities": serializers.ListField(child=serializers.CharField()),
        },
    )
    warnings = serializers.ListField(child=serializers.DictField(), required=False)

    class Meta(CallCreatedSerializer.Meta):
        ref_name = "CallCreated"
        fields = ["success", *CallCreatedSerializer.Meta.fields, "warnings"]
        read_only_fields = fields


Stats = _envelope("StatsEnvelope", stats=serializers.DictField())
Models = _envelope(
    "ModelCatalogue",
    default_model=serializers.CharField(),
    aliases=serializers.DictField(child=serializers.CharField()),
    models=serializers.ListField(child=serializers.DictField()),
)


def seed_paths(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """Paths as the seed writes them (`/api/realtime/calls`): every one also takes a trailing slash."""
    return [(path.removesuffix("/"), *rest) for path, *rest in endpoints]


OFFER_EXAMPLE = "v=0\r\no=- 4227147428 1719357865 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n…"

calls = extend_schema_view(
    create=extend_schema(
        summary="Create a WebRTC call",
        request={"application/json": CallCreateInputSerializer, "multipart/form-data": CallCreateInputSerializer},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Replays the first answer for the same key and body (24 h); another body with it is a 409.",
            )
        ],
        responses={
            201: OpenApiResponse(CreatedSchema, description="The call, answered upstream."),
            400: _error("A bad offer or session.", "invalid_sdp", "sdp: an SDP offer must start with 'v=0'.", {"field": "sdp"}),
            409: _error(
                "The Idempotency-Key was used with another body.",
                "idempotency_key_conflict",
                "This Idempotency-Key was used for another request.",
            ),
            413: _error(
                "The body or the offer is too large.",
                "payload_too_large",
                "The request body is too large (at most 262144 bytes).",
                {"max_bytes": 262144},
            ),
            502: _error("OpenAI refused or failed.", "upstream_error", "OpenAI could not create the call."),
            504: _error("OpenAI did not answer in time.", "upstream_timeout", "OpenAI did not answer in time."),
            **COMMON_ERRORS,
        },
        examples=[
            OpenApiExample("Seed quick start", value={"sdp": OFFER_EXAMPLE, "session": SEED_SESSION}, request_only=True),
            OpenApiExample(
                "Created",
                value={
                    "success": True,
                    "call_id": "call_1234567890",
                    "sdp_answer": "v=0\r\n…",
                    "model": "gpt-4o-realtime-preview",
                    "status": "active",
                    "created_at": 1734700000,
                    "session": {"model": "gpt-4o-realtime-preview", "voice": "alloy", "modalities": ["text", "audio"]},
                },
                response_only=True,
                status_codes=[201],
            ),
        ],
    ),
    list=extend_schema(
        operation_id="realtime_calls_list",
        summary="List calls",
        description="Newest first unless `ordering` says otherwise; every filter is optional and they combine (AND). "
        "Any other parameter is a 400 naming it. See docs/api.md for examples.",
        parameters=[*PAGING, CallListQuerySerializer],
        responses={200: CallPage, **BAD_QUERY, **COMMON_ERRORS},
        examples=[OpenApiExample("Seed list", value={"success": True, "data": [SEED_CALL], "count": 1}, response_only=True)],
    ),
    export=extend_schema(
        operation_id="realtime_calls_export",
        summary="Export calls (CSV or JSON lines)",
        description="Every call the filters match, one row each (usage, tokens, cost, duration, end reason, model, voice, "
        "source, caller, times), streamed. CSV cells that a spreadsheet would run as a formula start with `'`.",
        parameters=[CallExportQuerySerializer],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="A header line, then one line per call."),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="One JSON object per call and line."),
            **BAD_QUERY,
            **COMMON_ERRORS,
        },
    ),
    retrieve=extend_schema(summary="One call", responses={200: CallEnvelope, **NOT_FOUND, **COMMON_ERRORS}),
    destroy=extend_schema(
        summary="End a call",
        description="Hangs the call up upstream; the record stays for audit.",
        responses={
            200: CallEnded,
            409: _error(
                "The call had already ended.",
                "call_not_active",
                "The call is already ended.",
                {"call_id": "call_1234567890", "status": "ended"},
            ),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
    ),
    events=extend_schema(
        summary="A call's events",
        parameters=[*PAGING, OpenApiParameter("event_type", OpenApiTypes.STR)],
        responses={200: EventPage, **BAD_QUERY, **NOT_FOUND, **COMMON_ERRORS},
    ),
    erase_data=extend_schema(
        operation_id="realtime_calls_data_erase",
        summary="Erase a call's personal data",
        description="Staff only (`realtime.erase_call_data`), audited: replaces the call's SDP, session documents, transcripts, "
        "phone numbers and upstream events by a marker now (docs/privacy.md). The call and its statistics stay.",
        responses={
            200: _envelope(
                "CallDataErased",
                call_id=serializers.CharField(),
                erased=serializers.ListField(child=serializers.CharField()),
                message=serializers.CharField(),
            ),
            409: _error(
                "The call is still in progress.",
                "call_not_active",
                "The call is still in progress: end it before erasing its data.",
                {"call_id": "call_1234567890", "status": "active"},
            ),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
    ),
    transcript=extend_schema(summary="A call's transcript", responses={200: Transcript, **NOT_FOUND, **COMMON_ERRORS}),
    transfer=extend_schema(
        summary="Transfer a phone call",
        description="Sends a SIP REFER through OpenAI (target `sip:` or `tel:`); the call ends when the caller leaves.",
        request=TransferInputSerializer,
        responses={
            200: CallEnded,
            400: _error("A bad target.", "invalid_request", "target_uri: give a sip: or tel: URI.", {"field": "target_uri"}),
            409: _error(
                "Not an active phone call.", "call_not_active", "Only an active phone call can be transferred.", {"call_id": "call_1"}
            ),
            **NOT_FOUND,
            **COMMON_ERRORS,
        },
    ),
)
stats = extend_schema_view(list=extend_schema(operation_id="realtime_stats", summary="Statistics", responses={200: Stats, **COMMON_ERRORS}))
health = extend_schema(
    operation_id="realtime_health",
    summary="Health",
    description="Each component and whether it works (only the overall status for anonymous callers outside local mode); 503 when one does not.",
    responses={
        200: _envelope("Health", status=serializers.CharField(), components=serializers.DictField(required=False)),
        503: _envelope("Unhealthy", status=serializers.CharField(), components=serializers.DictField(required=False)),
    },
)
RoutePage = _envelope("SipRoutePage", data=SipRouteSerializer(many=True), count=serializers.IntegerField())
Route = _envelope("SipRouteEnvelope", route=SipRouteSerializer())
ROUTE_NOT_FOUND = {404: _error("No such route.", "not_found", "Not found.")}
sip_routes = extend_schema_view(
    list=extend_schema(operation_id="realtime_sip_routes_list", summary="SIP routes", responses={200: RoutePage, **COMMON_ERRORS}),
    retrieve=extend_schema(summary="One SIP route", responses={200: Route, **ROUTE_NOT_FOUND, **COMMON_ERRORS}),
    create=extend_schema(
        summary="Add a SIP route",
        request=SipRouteInputSerializer,
        responses={201: Route, 400: _error("A bad route.", "invalid_request", "name: required."), **COMMON_ERRORS},
    ),
    partial_update=extend_schema(
        summary="Change a SIP route",
        request=SipRouteInputSerializer,
        responses={200: Route, 400: _error("A bad route.", "invalid_request", "name: required."), **ROUTE_NOT_FOUND, **COMMON_ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete a SIP route",
        responses={200: _envelope("RouteDeleted", message=serializers.CharField()), **ROUTE_NOT_FOUND, **COMMON_ERRORS},
    ),
)
models = extend_schema_view(
    list=extend_schema(operation_id="realtime_models_list", summary="The model catalogue", responses={200: Models, **COMMON_ERRORS})
)


# --- OpenAI's SIP webhook -------------------------------------------------------------------------
# `/api/realtime/sip/webhook` is a plain Django view (the signature covers the raw body, so DRF must
# not parse it first), which drf-spectacular does not enumerate: `sip_webhook_path` adds it, described
# by the documentation-only view below.

SIP_HEADERS_EXAMPLE = [
    {"name": "From", "value": "sip:+142555512112@sip.example.com"},
    {"name": "To", "value": "sip:+18005551212@sip.example.com"},
    {"name": "Call-ID", "value": "03782086-4ce9-44bf-8b0d-4e303d2cc590"},
]
CallIncoming = inline_serializer(
    name="RealtimeCallIncoming",
    fields={
        "object": serializers.CharField(help_text="`event`."),
        "id": serializers.CharField(help_text="The event's id (`evt_…`)."),
        "type": serializers.CharField(help_text="`realtime.call.incoming`; other types are acknowledged and ignored."),
        "created_at": serializers.IntegerField(help_text="Unix seconds."),
        "data": inline_serializer(
            name="RealtimeCallIncomingData",
            fields={
                "call_id": serializers.CharField(help_text="OpenAI's id of the phone call (`rtc_…`)."),
                "sip_headers": inline_serializer(
                    name="SipHeader", fields={"name": serializers.CharField(), "value": serializers.CharField(allow_blank=True)}, many=True
                ),
            },
        ),
    },
)
WEBHOOK_HEADERS = [
    OpenApiParameter(
        "webhook-id", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True, description="Unique per event; a replay creates nothing."
    ),
    OpenApiParameter(
        "webhook-timestamp",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        required=True,
        description="Unix seconds of the delivery attempt; more than 300 s off is refused.",
    ),
    OpenApiParameter(
        "webhook-signature",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        required=True,
        description="`v1,<base64 HMAC-SHA256>` of `id.timestamp.body` with a secret of `OPENAI_WEBHOOK_SECRETS` (Standard Webhooks).",
    ),
]


sip_webhook_schema = extend_schema(
    operation_id="realtime_sip_webhook",
    summary="OpenAI's SIP webhook",
    description=(
        "OpenAI posts `realtime.call.incoming` here when a phone call reaches its SIP trunk (see docs/sip.md). "
        "The Standard Webhooks signature is checked on the raw body before anything is read or stored; the "
        "call is recorded once per `webhook-id` and decided by the SIP routes after the answer."
    ),
    tags=["realtime"],
    auth=[],
    parameters=WEBHOOK_HEADERS,
    request={"application/json": CallIncoming},
    responses={
        200: OpenApiResponse(
            _envelope("WebhookReceived", result=serializers.CharField(help_text="`incoming`, `duplicate` or `ignored`.")),
            description="Received: a new call (`incoming`), a replayed `webhook-id` (`duplicate`), or another event type (`ignored`).",
        ),
        400: _error(
            "Not signed as OpenAI signs, a stale timestamp, or no `data.call_id`.",
            "invalid_webhook_signature",
            "The webhook signature does not match, or its timestamp is too old.",
        ),
        405: _error("Only POST.", "method_not_allowed", "Method GET not allowed."),
        413: _error(
            "Over `REALTIME_SIP_WEBHOOK_MAX_BYTES`, refused unread.",
            "payload_too_large",
            "The request body is too large (at most 65536 bytes).",
            {"max_bytes": 65536},
        ),
    },
    examples=[
        OpenApiExample(
            "Incoming call",
            value={
                "object": "event",
                "id": "evt_685343a1381c819085d44c354e1b330e",
                "type": "realtime.call.incoming",
                "created_at": 1750287018,
                "data": {"call_id": "rtc_0123456789abcdef", "sip_headers": SIP_HEADERS_EXAMPLE},
            },
            request_only=True,
        ),
        OpenApiExample("Received", value={"success": True, "result": "incoming"}, response_only=True, status_codes=[200]),
    ],
)


class SipWebhookContract(APIView):
    """The contract of `realtime.api.sip_webhook` for the schema (the route serves the plain view;
    this one hands the raw request to it, so it answers the same if ever called)."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    @sip_webhook_schema
    def post(self, request: Any) -> Any:
        from .api import sip_webhook  # api imports this module for its decorators

        return async_to_sync(sip_webhook)(request._request)


def sip_webhook_path(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    path = reverse("realtime:sip-webhook").removesuffix("/")
    return [*endpoints, (path, f"^{path.lstrip('/')}/?$", "POST", SipWebhookContract.as_view())]
