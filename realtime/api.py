"""The REST API (`/api/realtime/...`): thin adapters between HTTP and `services`/`selectors`.

Creating and ending a call wait on OpenAI, so those actions are coroutines (adrf) and hold no
thread while they wait; reads are cheap and stay sync.
"""

from __future__ import annotations

from typing import Any

from adrf.viewsets import ViewSet
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.viewsets import GenericViewSet

from . import idempotency, selectors, services, sip
from .auth import Principal
from .exceptions import PayloadTooLarge, RealtimeError, TooManyCalls, error_body
from .models import SipRoute
from .permissions import SipRouteAccess, request_principal
from .serializers import (
    CallCreatedSerializer,
    CallCreateInputSerializer,
    CallEventSerializer,
    CallListQuerySerializer,
    CallSerializer,
    EventListQuerySerializer,
    SipRouteInputSerializer,
    SipRouteSerializer,
    TranscriptEntrySerializer,
    TransferInputSerializer,
    represent,
)
from .sessions import SessionConfig


def _query(serializer_class: type, request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class CallViewSet(ViewSet):
    lookup_field = "call_id"
    # Declared rather than discovered: adrf would otherwise introspect the class on every request.
    view_is_async = True

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Refuse an oversized body from its declared length, before reading or parsing it.
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > settings.REALTIME_MAX_BODY_BYTES:
            raise PayloadTooLarge(
                _("The request body is too large (at most %(n)d bytes).") % {"n": settings.REALTIME_MAX_BODY_BYTES},
                details={"max_bytes": settings.REALTIME_MAX_BODY_BYTES},
            )
        super().initial(request, *args, **kwargs)

    async def create(self, request: Request) -> Response:
        serializer = CallCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)  # pure validation: no I/O, no thread hop
        principal = request_principal(request)
        offer, session = serializer.validated_data["sdp"], serializer.validated_data["session"]
        raw_key = request.headers.get(idempotency.HEADER)
        if raw_key is None:
            return await self._create(principal, offer, session)
        key, scope = idempotency.clean_key(raw_key), idempotency.scope_for(principal)
        digest = idempotency.request_hash(sdp=offer, session=session.requested)
        replay = await sync_to_async(idempotency.reserve)(scope=scope, key=key, digest=digest)
        if replay is not None:
            return Response(replay.body, status=replay.status, headers={**replay.headers, "Idempotent-Replayed": "true"})
        try:
            response = await self._create(principal, offer, session)
        except TooManyCalls:
            # Refused before any call was recorded: the key stays free, so a retry may succeed.
            await sync_to_async(idempotency.release)(scope=scope, key=key)
            raise
        except RealtimeError as exc:
            # A call was recorded (and failed): retrying must not start another one.
            body = error_body(exc.code, exc.message, exc.details)
            await sync_to_async(idempotency.complete)(scope=scope, key=key, status=exc.status, body=body, headers=exc.headers)
            raise
        except BaseException:
            await sync_to_async(idempotency.release)(scope=scope, key=key)
            raise
        await sync_to_async(idempotency.complete)(scope=scope, key=key, status=response.status_code, body=response.data)
        return response

    async def _create(self, principal: Principal, offer: str, session: SessionConfig) -> Response:
        call = await services.call_create(
            offer=offer, session=session, actor=principal.actor, api_key=principal.api_key, data=principal.audit()
        )
        return Response({"success": True, **represent(CallCreatedSerializer, call)}, status=201)

    def list(self, request: Request) -> Response:
        query = _query(CallListQuerySerializer, request)
        calls = selectors.call_list(status=query.get("status"), source=query.get("source"), principal=request_principal(request))
        page = calls[query["offset"] : query["offset"] + query["limit"]]
        return Response({"success": True, "data": CallSerializer(page, many=True).data, "count": calls.count()})

    def retrieve(self, request: Request, call_id: str) -> Response:
        call = selectors.call_get(call_id=call_id, principal=request_principal(request))
        return Response({"success": True, "call": represent(CallSerializer, call)})

    async def destroy(self, request: Request, call_id: str) -> Response:
        """Ends the call (hangs up upstream); the record stays for audit."""
        principal = request_principal(request)
        call = await sync_to_async(selectors.call_get)(call_id=call_id, principal=principal)
        # Who ended it goes into the call.ended event: the key's prefix, or the staff user's name.
        call = await services.call_hangup(call=call, reason=principal.end_reason, actor=principal.actor, data=principal.audit() or None)
        return Response({"success": True, "call": represent(CallSerializer, call), "message": _("Call ended")})

    async def transfer(self, request: Request, call_id: str) -> Response:
        """Transfers a phone call (SIP REFER through OpenAI); the call ends when the caller leaves."""
        serializer = TransferInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        principal = request_principal(request)
        call = await sync_to_async(selectors.call_get)(call_id=call_id, principal=principal)
        target = serializer.validated_data["target_uri"]
        call = await services.call_transfer(call=call, target_uri=target, actor=principal.actor, data=principal.audit() or None)
        return Response({"success": True, "call": represent(CallSerializer, call), "message": _("Transfer requested")})

    def events(self, request: Request, call_id: str) -> Response:
        query = _query(EventListQuerySerializer, request)
        call = selectors.call_get(call_id=call_id, principal=request_principal(request))
        events = selectors.call_events(call=call, event_type=query.get("event_type")).select_related("call")
        page = events[query["offset"] : query["offset"] + query["limit"]]
        return Response({"success": True, "data": CallEventSerializer(page, many=True).data, "count": events.count()})

    def transcript(self, request: Request, call_id: str) -> Response:
        call = selectors.call_get(call_id=call_id, principal=request_principal(request))
        entries = selectors.call_transcript(call=call)
        data = TranscriptEntrySerializer(entries, many=True).data
        return Response({"success": True, "call_id": call.call_id, "data": data, "count": len(entries)})


class StatsView(APIView):
    def get(self, request: Request) -> Response:
        return Response({"success": True, "stats": selectors.stats(principal=request_principal(request))})


@csrf_exempt
async def sip_webhook(request: HttpRequest) -> JsonResponse:
    """`POST /api/realtime/sip/webhook`: OpenAI's signed webhooks; the only unauthenticated write.

    Outside DRF on purpose: the signature covers the raw bytes, so nothing may parse the body
    before it is verified, and no authentication or throttling class applies to OpenAI.
    """
    if request.method != "POST":
        message = _("Method %(method)s not allowed.") % {"method": str(request.method)[:20]}
        return JsonResponse(error_body("method_not_allowed", message), status=405, headers={"Allow": "POST"})
    limit = settings.REALTIME_SIP_WEBHOOK_MAX_BYTES
    length = request.META.get("CONTENT_LENGTH") or "0"
    if (length.isdigit() and int(length) > limit) or len(request.body) > limit:
        message = _("The request body is too large (at most %(n)d bytes).") % {"n": limit}
        return JsonResponse(error_body(PayloadTooLarge.code, message, {"max_bytes": limit}), status=413)
    try:
        result = await sip.handle_webhook(body=request.body, headers=request.headers)
    except RealtimeError as exc:
        return JsonResponse(error_body(exc.code, exc.message, exc.details), status=exc.status)
    return JsonResponse({"success": True, "result": result})


class SipRouteViewSet(GenericViewSet):
    """`/api/realtime/sip/routes`: the ordered routes that decide incoming phone calls (operators only)."""

    permission_classes = [SipRouteAccess]
    queryset = SipRoute.objects.order_by("position", "id")

    def list(self, request: Request) -> Response:
        routes = self.get_queryset()
        return Response({"success": True, "data": SipRouteSerializer(routes, many=True).data, "count": len(routes)})

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response({"success": True, "route": represent(SipRouteSerializer, self.get_object())})

    def create(self, request: Request) -> Response:
        serializer = SipRouteInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        route = serializer.save()
        return Response({"success": True, "route": represent(SipRouteSerializer, route)}, status=201)

    def partial_update(self, request: Request, pk: str) -> Response:
        serializer = SipRouteInputSerializer(self.get_object(), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        route = serializer.save()
        return Response({"success": True, "route": represent(SipRouteSerializer, route)})

    def destroy(self, request: Request, pk: str) -> Response:
        self.get_object().delete()
        return Response({"success": True, "message": _("Route deleted")})
