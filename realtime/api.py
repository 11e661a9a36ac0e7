"""The REST API (`/api/realtime/...`): thin adapters between HTTP and `services`/`selectors`.

Creating and ending a call wait on OpenAI, so those actions are coroutines (adrf) and hold no
thread while they wait; reads are cheap and stay sync. Who is asking is `request.auth`, the
principal set by the authentication classes (`realtime.auth.authentication`).
"""

from __future__ import annotations

from typing import Any

from adrf.viewsets import ViewSet
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from . import idempotency, openapi, selectors, services
from .auth.authentication import request_principal
from .catalogue import published
from .exceptions import PayloadTooLarge
from .pagination import CallPagination, EventPagination
from .serializers import (
    CallCreateInputSerializer,
    CallEventSerializer,
    CallListQuerySerializer,
    CallSerializer,
    EventListQuerySerializer,
    TranscriptEntrySerializer,
    represent,
)


def catalogue_view() -> dict[str, Any]:
    """The model catalogue with today's status of each model and the configured names."""
    return {
        "default_model": settings.REALTIME_DEFAULT_MODEL,
        "aliases": settings.REALTIME_MODEL_ALIASES,
        "models": published(today=timezone.now().date(), successors=settings.REALTIME_MODEL_SUCCESSORS),
    }


def _query(serializer_class: type, request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


@openapi.calls
class CallViewSet(ViewSet):
    """Calls: create (SDP offer in, answer out), list, read, end, and their events and transcript."""

    lookup_field = "call_id"
    # Any character but "/": call ids are ours, but a lookup of anything else must reach the 404.
    lookup_value_regex = "[^/]+"
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
        answer = await idempotency.call_create(
            principal=request_principal(request),
            offer=serializer.validated_data["sdp"],
            session=serializer.validated_data["session"],
            idempotency_key=request.headers.get(idempotency.HEADER),
        )
        return Response(answer.body, status=answer.status, headers=answer.headers)

    def list(self, request: Request) -> Response:
        paginator = CallPagination()
        paginator.window(request)
        query = _query(CallListQuerySerializer, request)
        calls = selectors.call_list(status=query.get("status"), principal=request_principal(request))
        page = paginator.paginate_queryset(calls, request, view=self)
        return paginator.get_paginated_response(CallSerializer(page, many=True).data)

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

    @action(detail=True, methods=["get"])
    def events(self, request: Request, call_id: str) -> Response:
        paginator = EventPagination()
        paginator.window(request)  # a bad limit is a 400 even for a call that does not exist
        query = _query(EventListQuerySerializer, request)
        call = selectors.call_get(call_id=call_id, principal=request_principal(request))
        events = selectors.call_events(call=call, event_type=query.get("event_type")).select_related("call")
        page = paginator.paginate_queryset(events, request, view=self)
        return paginator.get_paginated_response(CallEventSerializer(page, many=True).data)

    @action(detail=True, methods=["get"])
    def transcript(self, request: Request, call_id: str) -> Response:
        call = selectors.call_get(call_id=call_id, principal=request_principal(request))
        entries = selectors.call_transcript(call=call)
        data = TranscriptEntrySerializer(entries, many=True).data
        return Response({"success": True, "call_id": call.call_id, "data": data, "count": len(entries)})


@openapi.models
class ModelViewSet(ViewSet):
    """`GET /api/realtime/models`: the models we know, their prices, modalities and shutdown dates."""

    view_is_async = False

    def list(self, request: Request) -> Response:
        return Response({"success": True, **catalogue_view()})


@openapi.stats
class StatsViewSet(ViewSet):
    """Counts, durations, usage and cost of the calls the caller may see."""

    view_is_async = False

    def list(self, request: Request) -> Response:
        return Response({"success": True, "stats": selectors.stats(principal=request_principal(request))})
