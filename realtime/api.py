"""The REST API (`/api/realtime/...`): thin adapters between HTTP and `services`/`selectors`.

Creating and ending a call wait on OpenAI, so those actions are coroutines (adrf) and hold no
thread while they wait; reads are cheap and stay sync.
"""

from __future__ import annotations

from typing import Any

from adrf.viewsets import ViewSet
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils.translation import gettext as _
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors, services
from .exceptions import PayloadTooLarge
from .models import Call, CallEvent
from .serializers import (
    CallCreatedSerializer,
    CallCreateInputSerializer,
    CallEventSerializer,
    CallListQuerySerializer,
    CallSerializer,
    EventListQuerySerializer,
    TranscriptEntrySerializer,
)


def _query(serializer_class: type, request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class CallViewSet(ViewSet):
    lookup_field = "call_id"

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
        await sync_to_async(serializer.is_valid)(raise_exception=True)
        call = await services.call_create(offer=serializer.validated_data["sdp"], session=serializer.validated_data["session"])
        return Response({"success": True, **CallCreatedSerializer(call).data}, status=201)

    def list(self, request: Request) -> Response:
        query = _query(CallListQuerySerializer, request)
        calls = selectors.call_list(status=query.get("status"))
        page = calls[query["offset"] : query["offset"] + query["limit"]]
        return Response({"success": True, "data": CallSerializer(page, many=True).data, "count": calls.count()})

    def retrieve(self, request: Request, call_id: str) -> Response:
        call = selectors.call_get(call_id=call_id)
        return Response({"success": True, "call": CallSerializer(call).data})

    async def destroy(self, request: Request, call_id: str) -> Response:
        """Ends the call (hangs up upstream); the record stays for audit."""
        call = await sync_to_async(selectors.call_get)(call_id=call_id)
        call = await services.call_hangup(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
        return Response({"success": True, "call": CallSerializer(call).data, "message": _("Call ended")})

    def events(self, request: Request, call_id: str) -> Response:
        query = _query(EventListQuerySerializer, request)
        call = selectors.call_get(call_id=call_id)
        events = selectors.call_events(call=call, event_type=query.get("event_type")).select_related("call")
        page = events[query["offset"] : query["offset"] + query["limit"]]
        return Response({"success": True, "data": CallEventSerializer(page, many=True).data, "count": events.count()})

    def transcript(self, request: Request, call_id: str) -> Response:
        call = selectors.call_get(call_id=call_id)
        entries = selectors.call_transcript(call=call)
        data = TranscriptEntrySerializer(entries, many=True).data
        return Response({"success": True, "call_id": call.call_id, "data": data, "count": len(entries)})


class StatsView(APIView):
    def get(self, request: Request) -> Response:
        return Response({"success": True, "stats": selectors.stats()})
