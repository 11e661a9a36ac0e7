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

from . import idempotency, selectors, services
from .auth import Principal
from .exceptions import PayloadTooLarge, RealtimeError, TooManyCalls, error_body
from .permissions import request_principal
from .serializers import (
    CallCreatedSerializer,
    CallCreateInputSerializer,
    CallEventSerializer,
    CallListQuerySerializer,
    CallSerializer,
    EventListQuerySerializer,
    TranscriptEntrySerializer,
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
        principal, status = request_principal(request), query.get("status")
        calls = selectors.call_list(status=status, principal=principal, cursor=query.get("cursor"))
        page = list(calls[query["offset"] : query["offset"] + query["limit"]])
        # The count comes from the statistics counters (exact, without counting the history).
        body = {
            "success": True,
            "data": CallSerializer(page, many=True).data,
            "count": selectors.call_count(status=status, principal=principal),
        }
        if len(page) == query["limit"]:
            body["next_cursor"] = selectors.call_cursor(page[-1])
        return Response(body)

    def retrieve(self, request: Request, call_id: str) -> Response:
        call = selectors.call_get(call_id=call_id, principal=request_principal(request), documents=False)
        return Response({"success": True, "call": represent(CallSerializer, call)})

    async def destroy(self, request: Request, call_id: str) -> Response:
        """Ends the call (hangs up upstream); the record stays for audit."""
        principal = request_principal(request)
        call = await services.in_db_thread(selectors.call_get)(call_id=call_id, principal=principal, documents=False)
        # Who ended it goes into the call.ended event: the key's prefix, or the staff user's name.
        call = await services.call_hangup(call=call, reason=principal.end_reason, actor=principal.actor, data=principal.audit() or None)
        return Response({"success": True, "call": represent(CallSerializer, call), "message": _("Call ended")})

    def events(self, request: Request, call_id: str) -> Response:
        query = _query(EventListQuerySerializer, request)
        call = selectors.call_get(call_id=call_id, principal=request_principal(request), documents=False)
        events = selectors.call_events(call=call, event_type=query.get("event_type")).select_related("call")
        page = events[query["offset"] : query["offset"] + query["limit"]]
        return Response({"success": True, "data": CallEventSerializer(page, many=True).data, "count": events.count()})

    def transcript(self, request: Request, call_id: str) -> Response:
        call = selectors.call_get(call_id=call_id, principal=request_principal(request), documents=False)
        entries = selectors.call_transcript(call=call)
        data = TranscriptEntrySerializer(entries, many=True).data
        return Response({"success": True, "call_id": call.call_id, "data": data, "count": len(entries)})


class StatsView(APIView):
    def get(self, request: Request) -> Response:
        return Response({"success": True, "stats": selectors.stats(principal=request_principal(request))})
