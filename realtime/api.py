"""The REST API (`/api/realtime/...`): thin adapters between HTTP and `services`/`selectors`.

Creating and ending a call wait on OpenAI, so those actions are coroutines (adrf) and hold no
thread while they wait; reads are cheap and stay sync. Who is asking is `request.auth`, the
principal set by the authentication classes (`realtime.auth.authentication`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from inspect import iscoroutinefunction
from typing import Any

from adrf import viewsets as adrf_viewsets
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.viewsets import GenericViewSet

from . import exports, idempotency, openapi, selectors, services, sip
from .auth.authentication import ApiKeyAuthentication, LocalModeAuthentication, StaffSessionAuthentication, request_principal
from .auth.principals import Principal, bearer_token
from .catalogue import published
from .exceptions import PayloadTooLarge, RealtimeError, error_body
from .models import Call, SipRoute
from .pagination import CallPagination, EventPagination
from .permissions import CallDataErase, RealtimeAccess, SipRouteAccess
from .serializers import (
    CallCreateInputSerializer,
    CallEventSerializer,
    CallExportQuerySerializer,
    CallListQuerySerializer,
    CallSerializer,
    EventListQuerySerializer,
    SipRouteInputSerializer,
    SipRouteSerializer,
    TranscriptEntrySerializer,
    TransferInputSerializer,
    represent,
)
from .throttling import RealtimeThrottle

# Permission classes that decide from the principal alone (no database, no I/O).
LOOP_PERMISSIONS = frozenset({RealtimeAccess, CallDataErase})
# Authentication classes that read nothing from the database for a request without credentials.
NO_READ_WITHOUT_CREDENTIALS = frozenset({ApiKeyAuthentication, StaffSessionAuthentication, LocalModeAuthentication})


class ViewSet(adrf_viewsets.ViewSet):
    """adrf's ViewSet, checking sync throttles without a trip to the event loop, and an async
    action's checks with an API key without the request's thread."""

    # Set by `async_dispatch` when the action makes the request's checks itself (`checks_later`).
    checks_deferred = False

    def checks_later(self, request: Request) -> bool:
        """Whether the action makes the checks of a request with an API key itself (`run_checks`),
        on the database thread in the same trip as its first database work, rather than in a trip
        of their own before it starts. None does unless it says so."""
        return False

    async def async_dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        """adrf's `async_dispatch`, with `initial` (authentication, permissions, throttles, content
        negotiation) run by `initial_async` instead of always on the request's thread, or its
        checks left to the action (`checks_later`)."""
        self.args = args
        self.kwargs = kwargs
        drf_request = self.initialize_request(request, *args, **kwargs)
        self.request = drf_request
        self.headers = self.default_response_headers
        try:
            if self.checks_later(drf_request) and self._key_checks_in_memory(drf_request):
                self.checks_deferred = True
                # Everything `initial` does but the checks, which the action runs with run_checks.
                self.initial(drf_request, *args, **kwargs)
            else:
                await self.initial_async(drf_request, *args, **kwargs)
            method = (drf_request.method or "").lower()
            handler: Any = self.http_method_not_allowed
            if method in self.http_method_names:
                handler = getattr(self, method, self.http_method_not_allowed)
            if iscoroutinefunction(handler):
                response = await handler(drf_request, *args, **kwargs)
            else:
                response = await sync_to_async(handler)(drf_request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(await self._refusal_first(drf_request, exc))
        self.response = self.finalize_response(drf_request, response, *args, **kwargs)
        return self.response

    async def _refusal_first(self, request: Request, exc: Exception) -> Exception:
        """The error to answer: the action's, unless it failed before making the checks it was left
        (a body it could not use, say) and they refuse who is asking, as `initial` would have."""
        if not self.checks_deferred:
            return exc
        try:
            await services.in_db_thread(self.run_checks)(request)
        except Exception as refusal:
            return refusal
        return exc

    def _key_checks_in_memory(self, request: Request) -> bool:
        """A request with a bearer key whose every check but the key's read is in memory (our
        permission classes, sync throttles counting in the process's own cache)."""
        authenticators = request.authenticators or ()
        return (
            bool(authenticators)
            and type(authenticators[0]) is ApiKeyAuthentication
            and bearer_token(request.META.get("HTTP_AUTHORIZATION", "")) is not None
            and self._checks_in_memory()
        )

    def _checks_in_memory(self) -> bool:
        return (
            all(type(permission) in LOOP_PERMISSIONS for permission in self.get_permissions())
            and isinstance(caches["default"], LocMemCache)
            and all(isinstance(throttle, RealtimeThrottle) for throttle in self.get_throttles())
        )

    def _no_credentials_checked_in_memory(self, request: Request) -> bool:
        """A request with no credentials at all, no `Authorization` header and no session cookie
        (local mode's loopback client, or a refusal): our authentication classes find nobody without
        reading the database (a session without its cookie is empty), and the other checks are in
        memory (`_checks_in_memory`)."""
        return (
            "HTTP_AUTHORIZATION" not in request.META
            and settings.SESSION_COOKIE_NAME not in request.COOKIES
            and all(type(authenticator) in NO_READ_WITHOUT_CREDENTIALS for authenticator in request.authenticators or ())
            and self._checks_in_memory()
        )

    async def initial_async(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """`initial` for a request with a bearer key when every check it makes is in memory: the key
        is read on the database thread, the rest runs here. The request's thread is then left
        unused, which spares it the hops of the request signals too (realtime/handler.py; the
        figures measured for the two together are there). Otherwise, `initial` on the request's
        thread, as adrf does."""
        if self._no_credentials_checked_in_memory(request):
            # Local mode's requests (`make run`'s) need no thread of their own either: in bursts of
            # 200 concurrent creates, 24.2 against 25.0 ms of CPU per create and its DELETE.
            self.initial(request, *args, **kwargs)
            return
        if not self._key_checks_in_memory(request):
            await sync_to_async(self.initial)(request, *args, **kwargs)
            return
        await services.in_db_thread(self._authenticate_with_key)(request)
        self.initial(request, *args, **kwargs)

    @staticmethod
    def _authenticate_with_key(request: Request) -> None:
        """Request._authenticate for a request with a bearer key: its principal, or AuthenticationFailed."""
        assert request.authenticators  # an ApiKeyAuthentication first (_key_checks_in_memory)
        authenticator = request.authenticators[0]
        try:
            found: Any = authenticator.authenticate(request)
        except exceptions.APIException:
            request._not_authenticated()  # type: ignore[attr-defined]  # as Request._authenticate does
            raise
        assert found is not None  # a bearer token was checked: the key's principal or a refusal
        request._authenticator = authenticator  # type: ignore[attr-defined]  # as Request._authenticate does
        request.user, request.auth = found

    def run_checks(self, request: Request) -> Principal:
        """The checks `initial` left to the action (`checks_later`), on the thread they run on (the
        database thread: the key is read there): the key, permissions, throttles. Returns the
        request's principal, or raises the refusal `initial` would have raised. Once they are made
        (or when they were not left to the action), the principal alone."""
        if self.checks_deferred:
            self.checks_deferred = False
            self._authenticate_with_key(request)
            self.check_permissions(request)
            self.check_throttles(request)
        return request_principal(request)

    def perform_authentication(self, request: Request) -> None:
        if not self.checks_deferred:
            super().perform_authentication(request)

    def check_permissions(self, request: Request) -> None:
        if not self.checks_deferred:
            super().check_permissions(request)

    def check_throttles(self, request: Request) -> None:
        if self.checks_deferred:
            return
        # adrf runs `async_to_sync(check_async_throttles)` even when no throttle is async: from the
        # request's thread, a round trip to the event loop for nothing (about 2 % of the broker's
        # CPU per create, measured with py-spy). Ours are all sync: DRF's own check is the same one.
        if any(iscoroutinefunction(throttle.allow_request) for throttle in self.get_throttles()):
            super().check_throttles(request)
        else:
            APIView.check_throttles(self, request)


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


class ExportNegotiation(DefaultContentNegotiation):
    """The export's `format` (csv, jsonl) names its file, not one of DRF's renderers: its errors
    answer in JSON like every other."""

    def select_renderer(self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None) -> tuple[Any, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


def call_query(serializer_class: type, request: Request) -> dict[str, Any]:
    """The list's or the export's validated parameters, the API key named by its prefix."""
    query = _query(serializer_class, request)
    if "api_key" in query:
        query["api_key"] = selectors.api_key_id(query["api_key"])
    return query


@openapi.calls
class CallViewSet(ViewSet):
    """Calls: create (SDP offer in, answer out), list, read, end, and their events and transcript."""

    lookup_field = "call_id"
    # Any character but "/": call ids are ours, but a lookup of anything else must reach the 404.
    lookup_value_regex = "[^/]+"
    # Declared rather than discovered: adrf would otherwise introspect the class on every request.
    view_is_async = True

    def get_content_negotiator(self) -> Any:
        return ExportNegotiation() if getattr(self, "action", None) == "export" else super().get_content_negotiator()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Refuse an oversized body from its declared length, before reading or parsing it.
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > settings.REALTIME_MAX_BODY_BYTES:
            raise PayloadTooLarge(
                _("The request body is too large (at most %(n)d bytes).") % {"n": settings.REALTIME_MAX_BODY_BYTES},
                details={"max_bytes": settings.REALTIME_MAX_BODY_BYTES},
            )
        super().initial(request, *args, **kwargs)

    def checks_later(self, request: Request) -> bool:
        # A create's first database work is recording the call: the key is read in the same trip to
        # the database thread, the call recorded right after the checks pass; with an
        # Idempotency-Key, reserving the key. A DELETE's is reading the call: the key, the call and
        # its end in one trip.
        return self.action in ("create", "destroy")

    async def create(self, request: Request) -> Response:
        serializer = CallCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)  # pure validation: no I/O, no thread hop
        answer = await idempotency.call_create(
            principal=functools.partial(self.run_checks, request) if self.checks_deferred else request_principal(request),
            offer=serializer.validated_data["sdp"],
            session=serializer.validated_data["session"],
            idempotency_key=request.headers.get(idempotency.HEADER),
        )
        return Response(answer.body, status=answer.status, headers=answer.headers)

    def list(self, request: Request) -> Response:
        paginator = CallPagination()
        paginator.window(request)
        query = call_query(CallListQuerySerializer, request)
        principal, cursor, ordering = request_principal(request), query.pop("cursor", None), query["ordering"]
        calls = selectors.call_list(principal=principal, cursor=cursor, **query)
        # From the statistics counters when they count this filter; else bounded (see docs/api.md).
        count, exact = selectors.call_count(principal=principal, **query)
        # None, as the counters know: no index walked in search of what is not there.
        page = paginator.paginate_counted(calls.none() if exact and not count else calls, request, count=count)
        response = paginator.get_paginated_response(CallSerializer(page, many=True).data)
        if not exact:
            response.data["count_capped"] = True
        if len(page) == paginator.window(request)[0]:
            response.data["next_cursor"] = selectors.call_cursor(page[-1], ordering)
        return response

    @action(detail=False, methods=["get"])
    def export(self, request: Request) -> StreamingHttpResponse:
        """Every call the filters match, streamed as CSV or JSON lines (constant memory)."""
        query = call_query(CallExportQuerySerializer, request)
        file_format, ordering = query.pop("format"), query.pop("ordering")
        order = selectors.ORDER_FIELDS[ordering.lstrip("-")]
        calls = selectors.call_filter(selectors.visible_calls(request_principal(request)), **query, order=order)
        return exports.response(calls, ordering=ordering, file_format=file_format)

    def retrieve(self, request: Request, call_id: str) -> Response:
        call = selectors.call_get(call_id=call_id, principal=request_principal(request), documents=False)
        return Response({"success": True, "call": represent(CallSerializer, call)})

    async def destroy(self, request: Request, call_id: str) -> Response:
        """Ends the call (hangs up upstream); the record stays for audit."""

        def end() -> Call:
            # On the database thread: the checks left to the action, the call's lookup and its end.
            principal = self.run_checks(request)
            call = selectors.call_get(call_id=call_id, principal=principal, documents=False)
            # Who ended it goes into the call.ended event: the key's prefix, or the staff user's name.
            return services.call_end(call=call, reason=principal.end_reason, actor=principal.actor, data=principal.audit() or None)

        call = await services.call_hangup_by(end)
        return Response({"success": True, "call": represent(CallSerializer, call), "message": _("Call ended")})

    # adrf runs async actions; DRF's stubs type @action for sync methods only.
    @action(detail=True, methods=["post"])  # type: ignore[type-var]
    async def transfer(self, request: Request, call_id: str) -> Response:
        """Transfers a phone call (SIP REFER through OpenAI); the call ends when the caller leaves."""
        serializer = TransferInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        principal = request_principal(request)
        call = await services.in_db_thread(selectors.call_get)(call_id=call_id, principal=principal, documents=False)
        target = serializer.validated_data["target_uri"]
        call = await services.call_transfer(call=call, target_uri=target, actor=principal.actor, data=principal.audit() or None)
        return Response({"success": True, "call": represent(CallSerializer, call), "message": _("Transfer requested")})

    @action(detail=True, methods=["delete"], url_path="data", permission_classes=[CallDataErase])
    def erase_data(self, request: Request, call_id: str) -> Response:
        """Erases an ended call's personal data now (a person's request); staff only, audited."""
        principal = request_principal(request)
        call = selectors.call_get(call_id=call_id, principal=principal, documents=False)
        by = services.AccessActor.of_request(request)
        erased = services.call_erase_data(call=call, by=by, actor=principal.actor)
        return Response({"success": True, "call_id": call.call_id, "erased": erased, "message": _("Call data erased")})

    @action(detail=True, methods=["get"])
    def events(self, request: Request, call_id: str) -> Response:
        paginator = EventPagination()
        paginator.window(request)  # a bad limit is a 400 even for a call that does not exist
        query = _query(EventListQuerySerializer, request)
        call = selectors.call_get(call_id=call_id, principal=request_principal(request), documents=False)
        events = selectors.call_events(call=call, event_type=query.get("event_type")).select_related("call")
        page = paginator.paginate_queryset(events, request, view=self)
        return paginator.get_paginated_response(CallEventSerializer(page, many=True).data)

    @action(detail=True, methods=["get"])
    def transcript(self, request: Request, call_id: str) -> Response:
        call = selectors.call_get(call_id=call_id, principal=request_principal(request), documents=False)
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


@openapi.sip_routes
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
