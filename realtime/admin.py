"""Support staff's view of calls: browse, search, filter, audit, terminate.

Ending calls loops over `services.call_hangup` (never a bulk UPDATE), so each ended call gets its
`call.ended` event, its push and its upstream hangup, exactly as through the API.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.db.models.expressions import Combinable
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import ValidationError

from . import counters, exports, selectors, services
from .api import catalogue_view
from .exceptions import CallStateConflict, RealtimeError
from .models import AccessAudit, ApiKey, Call, CallEvent, SipRoute
from .serializers import ROUTE_FIELDS, TransferInputSerializer, validate_route_session

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise


# The product's name on every admin page (title, header), instead of "Django administration".
admin.site.site_header = admin.site.site_title = "IAPosteManager"
admin.site.index_title = _("Calls, keys and phone routes")
# The breadcrumbs and the start page lead everywhere; the sidebar's 300 px go to the call list's
# columns, so they fit at 1366 px beside the filters.
admin.site.enable_nav_sidebar = False


def minutes_seconds(seconds: float | None) -> str:
    """A duration as support staff read it: `m:ss` (`h:mm:ss` past an hour), never `3,059057`."""
    if seconds is None:
        return "—"
    whole = max(round(seconds), 0)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def short_call_id(call_id: str) -> str:
    """The id as the demo page shows it (`call_` and 6 characters): enough to find the call again."""
    return call_id[:11] + "…" if len(call_id) > 11 else call_id


def status_badge(call: Call) -> SafeString:
    return format_html('<span class="badge badge-{}">{}</span>', call.status, call.get_status_display())


JSON_TOKEN = re.compile(r'("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)')


def highlighted_json(value: Any) -> SafeString:
    """`value` as indented JSON, keys, strings, numbers and literals in spans (static/realtime/admin.css)."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    out: list[str] = []
    position = 0
    for match in JSON_TOKEN.finditer(text):
        out.append(escape(text[position : match.start()]))
        string, colon, literal, number = match.groups()
        if string is not None:
            out.append(f'<span class="{"jk" if colon else "js"}">{escape(string)}</span>{colon or ""}')
        elif literal is not None:
            out.append(f'<span class="jl">{literal}</span>')
        else:
            out.append(f'<span class="jn">{number}</span>')
        position = match.end()
    out.append(escape(text[position:]))
    # Every piece of the text went through escape(); the spans are ours.
    return mark_safe("".join(out))


class ReadOnly:
    """Audit records: shown, never added, changed or deleted by hand. Calls change only through
    the terminate action, which goes through `services` like every other entry point."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class UpstreamHangupFilter(admin.SimpleListFilter):
    """Ended calls whose upstream hangup OpenAI has not confirmed yet (the sweeper retries them)."""

    title = _("upstream hangup")
    parameter_name = "upstream_hangup"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
        return [("unconfirmed", _("Not confirmed yet")), ("confirmed", _("Confirmed"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Call]) -> QuerySet[Call]:
        # Ended (or failed) calls that reached upstream.
        ended = Q(upstream_id__gt="", ended_at__isnull=False)
        if self.value() == "unconfirmed":
            # The few unconfirmed come from their partial index (call_hangup_retry_idx), read
            # first: asked directly, or in a subquery that PostgreSQL turns into a join, planners
            # walk the newest-first index past every confirmed call looking for them (2.7 s at a
            # million calls). As many as the list ever counts (its paginator stops there).
            found = Call.objects.filter(ended, upstream_closed_at__isnull=True).order_by().values_list("pk", flat=True)
            return queryset.filter(pk__in=list(found[: BoundedPaginator.COUNT_CAP + 1]))
        if self.value() == "confirmed":
            # Nearly every call: read newest first, never through the upstream id's index (a
            # range holding the whole history, then sorted).
            confirmed = Q(walked_upstream_id__gt="", ended_at__isnull=False, upstream_closed_at__isnull=False)
            return queryset.alias(walked_upstream_id=selectors.unindexed("upstream_id")).filter(confirmed)
        return queryset


class CountedValuesFilter(admin.SimpleListFilter):
    """Filter by a value of `dimension` (model, voice), offering the values the statistics
    counters know: a few rows, where Django's own filter would read every call for its choices."""

    dimension = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, value) for value in counters.values(self.dimension)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Call]) -> QuerySet[Call]:
        return queryset.filter(**{self.dimension: self.value()}) if self.value() else queryset


class ModelFilter(CountedValuesFilter):
    title = _("model")
    parameter_name = dimension = "model"


class VoiceFilter(CountedValuesFilter):
    title = _("voice")
    parameter_name = dimension = "voice"


class BoundedPaginator(Paginator):
    """Counts at most COUNT_CAP rows: a page of the newest calls or events costs the same at any
    history size, where an exact count would read the whole table (or the whole filtered set)."""

    COUNT_CAP = 10_000

    @cached_property
    def count(self) -> int:
        rows = cast("QuerySet[Any]", self.object_list)
        return rows.order_by()[: self.COUNT_CAP + 1].count()


# What a phone number looks like when typed: digits, maybe a leading +, spaces or dots between.
# (Digits alone are a number, not the hex part of a call id: the demo page shows ids with `call_`.)
PHONE_NUMBER = re.compile(r"\+?[0-9][0-9 .()-]*")
HEX = re.compile(r"[0-9a-f]+")


def search_target(search_term: str) -> tuple[str, str] | None:
    """Which indexed column a search term names, and the prefix to look for in it.

    A call id in full or its beginning, as copied from the demo page (`call_1a2b3c…`, ellipsis
    included, or only its hex part); an upstream id (`rtc_…`); a caller number (digits, maybe `+`);
    otherwise words said in the call ("words": the API's `q`, through the transcript word index).
    """
    term = search_term.strip().rstrip("….").strip()
    if not term:
        return None
    if term.startswith("rtc"):
        return "upstream_id", term
    if term.startswith("call_"):
        return "call_id", term
    if PHONE_NUMBER.fullmatch(term):
        return "sip_caller", re.sub(r"[ .()-]", "", term)
    if HEX.fullmatch(term.lower()):
        return "call_id", "call_" + term.lower()
    if term.startswith(("sip:", "tel:")):
        number = term.split(":", 1)[1].split("@", 1)[0]
        return ("sip_caller", number) if number else None
    if term.startswith("call"):
        return "call_id", term
    return "words", term


class IdSearch:
    """Admin search by call id, upstream id or caller number, in full or their beginning, through
    their indexes. Results come in that column's order, so a short prefix still reads one page of
    the index, not every match."""

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> tuple[QuerySet[Any], bool]:
        target = search_target(search_term)
        if target is None:
            return queryset, False
        field, start = target
        if field == "words":
            return selectors.call_search(queryset, start), False
        found = queryset.filter(selectors.prefix(field, start))
        if field == "sip_caller" and HEX.fullmatch(start) and not found.exists():
            # Digits alone are a caller number, or the beginning of a call id whose hex part starts
            # with digits only (as the demo page's short id may): no caller, then the call id.
            return queryset.filter(selectors.prefix("call_id", "call_" + start)), False
        return found, False


class TransferActionForm(ActionForm):
    target_uri = forms.CharField(label=_("Transfer to (sip: or tel: URI)"), required=False, max_length=255)


@admin.register(Call)
class CallAdmin(ReadOnly, IdSearch, admin.ModelAdmin):
    # Fits 1366 px with the filters beside it: a short id (copy button), a badge, m:ss durations.
    list_display = ("short_id", "status_badge", "source", "caller", "model", "created", "duration", "end_reason", "cost")
    list_select_related = ("api_key",)
    empty_value_display = "—"
    # Dates as ranges on the created_at index (today, past 7 days, this month, this year): the
    # admin's date drill-down listed every year, month and day present, reading every call.
    list_filter = (
        "status",
        "end_reason",
        UpstreamHangupFilter,
        "source",
        ModelFilter,
        VoiceFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("call_id", "upstream_id")
    search_help_text = _("A call id (call_…) or upstream id (rtc_…), whole or its beginning; a caller number; or words said in the call.")
    ordering = ("-created_at", "-id")
    # Only the orders an index serves: sorting a million rows by duration would read them all.
    sortable_by = ("short_id", "created", "cost")
    change_form_template = "admin/realtime/call/change_form.html"
    # The call page's timeline: the first events of a call (a monitored call has thousands).
    TIMELINE_LIMIT = 300
    list_per_page = 50
    show_full_result_count = False
    paginator = BoundedPaginator
    actions = ["end_calls", "transfer_calls", "export_calls", "erase_call_data"]
    action_form = TransferActionForm
    fieldsets = (
        (None, {"fields": ("call_id", "upstream_id", "status", "end_reason", "error_message", "source")}),
        (
            _("Timing"),
            {
                "fields": (
                    "created_at",
                    "answered_at",
                    "last_activity_at",
                    "ended_at",
                    "duration",
                    "max_duration_seconds",
                    "upstream_closed_at",
                    "hangup_attempts",
                    "hangup_retry_at",
                )
            },
        ),
        (
            _("Session requested"),
            {"fields": ("model", "voice", "modalities", "instructions", "temperature", "max_output_tokens")},
        ),
        (_("Sent upstream"), {"fields": ("upstream_model",)}),
        (_("Phone call (SIP)"), {"fields": ("sip_caller", "sip_called", "sip_route", "sip_status", "transferred_to", "sip_headers")}),
        (_("Events"), {"fields": ("sideband_events",)}),
        (_("Usage and cost"), {"fields": ("cost_usd", "input_tokens", "output_tokens", "usage")}),
        (_("Monitoring"), {"classes": ("collapse",), "fields": ("monitor_owner", "monitor_lease_until")}),
        (_("SDP"), {"classes": ("collapse",), "fields": ("sdp_offer", "sdp_answer")}),
    )

    def get_ordering(self, request: HttpRequest) -> list[str | Combinable] | tuple[str | Combinable, ...] | tuple[()]:
        target = search_target(request.GET.get("q", ""))
        # Search results in the order of the index that finds them (see IdSearch).
        return [target[0]] if target and target[0] != "words" else super().get_ordering(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Call]:
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name == "realtime_call_changelist":
            # The list never shows SDPs or session blobs; don't load them.
            queryset = queryset.defer("sdp_offer", "sdp_answer", "session_requested", "session_upstream", "instructions")
        return queryset

    def get_readonly_fields(self, request: HttpRequest, obj: Call | None = None) -> list[str]:
        # An audit record: nothing on it is edited by hand, state changes go through the action.
        return [*(f.name for f in Call._meta.fields), "duration", "sideband_events"]

    @admin.display(description=_("cost"), ordering="cost_usd")
    def cost(self, call: Call) -> str:
        return "—" if call.cost_usd is None else f"${call.cost_usd:.4f}"

    @admin.display(description=_("call id"), ordering="call_id")
    def short_id(self, call: Call) -> str:
        # The full id rides along for the copy button (static/realtime/admin-console.js).
        return format_html(
            '<span class="call-id" data-copy="{}" title="{}">{}</span>', call.call_id, call.call_id, short_call_id(call.call_id)
        )

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, call: Call) -> str:
        return status_badge(call)

    @admin.display(description=_("caller"))
    def caller(self, call: Call) -> str:
        """Who called: the number of a phone call, the API key of a WebRTC call."""
        if call.source == Call.Source.SIP:
            return call.sip_caller or "—"
        return call.api_key.name if call.api_key else gettext("no key (staff or local)")

    @admin.display(description=_("created at"), ordering="created_at")
    def created(self, call: Call) -> str:
        return date_format(timezone.localtime(call.created_at), "SHORT_DATETIME_FORMAT")

    @admin.display(description=_("sideband events"))
    def sideband_events(self, call: Call) -> str:
        count = call.events.exclude(upstream_event_id="").count()
        url = reverse("admin:realtime_callevent_changelist") + "?" + urlencode({"q": call.call_id})
        return format_html('<a href="{}">{}</a>', url, ngettext("%(n)d event", "%(n)d events", count) % {"n": count})

    @admin.display(description=_("duration"))
    def duration(self, call: Call) -> str:
        if call.duration_seconds is None and call.status in Call.ENDABLE:
            # Still going: how long so far.
            return format_html('<span class="muted">{}</span>', minutes_seconds((timezone.now() - call.created_at).total_seconds()))
        return minutes_seconds(call.duration_seconds)

    # --- the call page ---------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/end/", view(self.end_view), name="realtime_call_end"),
            path("<path:object_id>/transfer/", view(self.transfer_view), name="realtime_call_transfer"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        call = self.get_object(request, object_id)
        context = {**(extra_context or {}), **(self.console_context(request, call) if call else {})}
        return super().change_view(request, object_id, form_url, extra_context=context)

    def can_transfer(self, request: HttpRequest, call: Call) -> bool:
        return call.source == Call.Source.SIP and call.status == Call.Status.ACTIVE and request.user.has_perm("realtime.transfer_call")

    def console_context(self, request: HttpRequest, call: Call) -> dict[str, Any]:
        """What the call page shows above the record: header, conversation, metrics, timeline, sessions."""
        events = list(call.events.order_by("id")[: self.TIMELINE_LIMIT + 1])
        more = len(events) > self.TIMELINE_LIMIT
        lifecycle = {"call.created", "call.incoming", "call.answered", "call.ended", "call.failed", "call.transferred"}
        timeline = [
            {
                "type": event.event_type,
                "actor": event.get_actor_display(),
                "at": timezone.localtime(event.created_at),
                # To the millisecond: events of one turn are a few milliseconds apart.
                "at_ms": _to_millisecond(timezone.localtime(event.created_at)),
                "lifecycle": event.event_type in lifecycle,
                "summary": _summary(event.data),
                "data": highlighted_json(event.data) if event.data else "",
            }
            for event in events[: self.TIMELINE_LIMIT]
        ]
        roles = {"user": _("Caller"), "assistant": _("Assistant")}
        conversation = [
            {"role": e["role"], "who": roles[e["role"]], "at": datetime.fromtimestamp(e["timestamp"], tz=UTC), "text": e["text"]}
            for e in selectors.call_transcript(call=call)
        ]
        transcribing = bool(((call.session_upstream.get("audio") or {}).get("input") or {}).get("transcription"))
        return {
            "call": call,
            "status_badge": status_badge(call),
            "short_id": short_call_id(call.call_id),
            "who": self.caller(call),
            "duration_shown": self.duration(call),
            "cost_shown": self.cost(call),
            "live": call.status in Call.ENDABLE,
            "conversation": conversation,
            "transcribing": transcribing,
            "metrics_rows": _metrics_rows(call.metrics),
            "timeline": timeline,
            "timeline_more": more,
            "all_events_url": reverse("admin:realtime_callevent_changelist") + "?" + urlencode({"q": call.call_id}),
            "session_requested": highlighted_json(call.session_requested),
            "session_upstream": highlighted_json(call.session_upstream),
            "can_end": call.status in Call.ENDABLE and self.has_end_call_permission(request),
            "can_transfer": self.can_transfer(request, call),
        }

    def _confirm(self, request: HttpRequest, object_id: str, *, action: str, permitted: bool) -> tuple[Call, dict[str, Any]]:
        call = get_object_or_404(Call, pk=object_id)
        if not permitted:
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "call": call,
            "action": action,
            "short_id": short_call_id(call.call_id),
            "status_badge": status_badge(call),
            "change_url": reverse("admin:realtime_call_change", args=[call.pk]),
        }
        return call, context

    def end_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """End one call from its page, after a confirmation: `services.call_hangup`, as the action does."""
        call, context = self._confirm(request, object_id, action="end", permitted=self.has_end_call_permission(request))
        if request.method == "POST":
            try:
                async_to_sync(services.call_hangup)(
                    call=call,
                    reason=Call.EndReason.ADMIN_HANGUP,
                    actor=CallEvent.Actor.ADMIN,
                    data={"staff_user": request.user.get_username()},
                )
            except CallStateConflict as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                self.message_user(request, gettext("Call ended."), messages.SUCCESS)
            return HttpResponseRedirect(context["change_url"])
        context["title"] = gettext("End this call?")
        return TemplateResponse(request, "admin/realtime/call/confirm.html", context)

    def transfer_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Transfer one phone call from its page, after confirming the target: `services.call_transfer`."""
        call, context = self._confirm(request, object_id, action="transfer", permitted=request.user.has_perm("realtime.transfer_call"))
        context["title"] = gettext("Transfer this call?")
        context["target_uri"] = request.POST.get("target_uri", "").strip()
        if request.method == "POST":
            target = TransferInputSerializer(data={"target_uri": context["target_uri"]})
            try:
                target.is_valid(raise_exception=True)
            except (RealtimeError, ValidationError):
                context["error"] = gettext("Give a sip: or tel: URI to transfer to.")
                return TemplateResponse(request, "admin/realtime/call/confirm.html", context, status=400)
            try:
                async_to_sync(services.call_transfer)(
                    call=call,
                    target_uri=target.validated_data["target_uri"],
                    actor=CallEvent.Actor.ADMIN,
                    data={"staff_user": request.user.get_username()},
                )
            except RealtimeError as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                self.message_user(
                    request, gettext("Call transferred to %(target)s.") % {"target": target.validated_data["target_uri"]}, messages.SUCCESS
                )
            return HttpResponseRedirect(context["change_url"])
        return TemplateResponse(request, "admin/realtime/call/confirm.html", context)

    def has_erase_call_data_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("realtime.erase_call_data")

    @admin.action(description=_("Erase the personal data of selected calls"), permissions=["erase_call_data"])
    def erase_call_data(self, request: HttpRequest, queryset: QuerySet[Call]) -> None:
        """A person's erase request (docs/privacy.md): the same audited path as DELETE .../data."""
        erased = skipped = 0
        by = services.AccessActor.of_request(request)
        for call in queryset.select_related(None).only("pk", "call_id"):
            try:
                services.call_erase_data(call=call, by=by, actor=CallEvent.Actor.ADMIN)
            except CallStateConflict:
                skipped += 1
            else:
                erased += 1
        message = ngettext("Data of %(n)d call erased", "Data of %(n)d calls erased", erased) % {"n": erased}
        if skipped:
            message += ", " + ngettext("%(n)d skipped (in progress)", "%(n)d skipped (in progress)", skipped) % {"n": skipped}
        self.message_user(request, message + ".", messages.SUCCESS if erased else messages.WARNING)

    def has_end_call_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("realtime.end_call")

    @admin.action(description=_("End selected calls"), permissions=["end_call"])
    def end_calls(self, request: HttpRequest, queryset: QuerySet[Call]) -> None:
        ended = skipped = 0
        actor_data = {"staff_user": request.user.get_username()}
        for call in queryset.select_related(None).only("pk", "call_id", "status", "created_at", "upstream_id"):
            try:
                async_to_sync(services.call_hangup)(
                    call=call, reason=Call.EndReason.ADMIN_HANGUP, actor=CallEvent.Actor.ADMIN, data=actor_data
                )
            except CallStateConflict:
                skipped += 1
            else:
                ended += 1
        message = ngettext("%(n)d call ended", "%(n)d calls ended", ended) % {"n": ended}
        if skipped:
            message += ", " + ngettext("%(n)d skipped (not active)", "%(n)d skipped (not active)", skipped) % {"n": skipped}
        self.message_user(request, message + ".", messages.SUCCESS if ended else messages.WARNING)

    @admin.action(description=_("Export selected calls (CSV)"), permissions=["view"])
    def export_calls(self, request: HttpRequest, queryset: QuerySet[Call]) -> StreamingHttpResponse:
        # The API's export (streamed in keyset pages): "select all" over a million calls holds one page.
        return exports.response(queryset)

    def has_transfer_call_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("realtime.transfer_call")

    @admin.action(description=_("Transfer selected phone calls"), permissions=["transfer_call"])
    def transfer_calls(self, request: HttpRequest, queryset: QuerySet[Call]) -> None:
        target = TransferInputSerializer(data={"target_uri": request.POST.get("target_uri", "")})
        try:
            target.is_valid(raise_exception=True)
        except (RealtimeError, ValidationError):
            self.message_user(request, gettext("Give a sip: or tel: URI to transfer to."), messages.ERROR)
            return
        done, refused = 0, []
        actor_data = {"staff_user": request.user.get_username()}
        for call in queryset:
            try:
                async_to_sync(services.call_transfer)(
                    call=call, target_uri=target.validated_data["target_uri"], actor=CallEvent.Actor.ADMIN, data=actor_data
                )
            except RealtimeError as exc:
                refused.append(f"{call.call_id}: {exc.message}")
            else:
                done += 1
        if done:
            self.message_user(
                request, ngettext("%(n)d call transferred.", "%(n)d calls transferred.", done) % {"n": done}, messages.SUCCESS
            )
        for line in refused:
            self.message_user(request, line, messages.WARNING)


def _to_millisecond(at: datetime) -> str:
    return f"{at:%H:%M:%S}.{at.microsecond // 1000:03d}"


def _summary(data: dict[str, Any]) -> str:
    """One line of an event's data for its folded view: its first few fields."""
    parts = []
    for key, value in list(data.items())[:4]:
        shown = value if isinstance(value, str | int | float | bool) or value is None else "…"
        parts.append(f"{key}: {shown}"[:60])
    return " · ".join(parts)


def _metrics_rows(metrics: dict[str, Any]) -> list[tuple[StrOrPromise, str]]:
    """`Call.metrics` as label/value rows; empty until the monitor has measured a turn."""
    if not metrics:
        return []
    latency = metrics.get("latency_ms") or {}
    talk = metrics.get("talk_seconds") or {}

    def ms(value: Any) -> str:
        return "—" if value is None else f"{value:.0f} ms"

    def seconds(value: Any) -> str:
        return "—" if value is None else minutes_seconds(value)

    return [
        (_("Turns"), str(metrics.get("turns", "—"))),
        (_("Answer latency, median"), ms(latency.get("p50"))),
        (_("Answer latency, p95"), ms(latency.get("p95"))),
        (_("Slowest answer"), ms(latency.get("max"))),
        (_("Interruptions"), str(metrics.get("interruptions", "—"))),
        (_("Caller talk time"), seconds(talk.get("caller"))),
        (_("Assistant talk time"), seconds(talk.get("assistant"))),
        (_("Silence"), seconds(metrics.get("silence_seconds"))),
    ]


class SipRouteForm(forms.ModelForm):
    class Meta:
        model = SipRoute
        fields = ROUTE_FIELDS

    def clean_session(self) -> dict[str, Any]:
        try:
            return validate_route_session(self.cleaned_data.get("session"))
        except RealtimeError as exc:
            raise forms.ValidationError(exc.message) from None


@admin.register(SipRoute)
class SipRouteAdmin(admin.ModelAdmin):
    """The routes that decide incoming phone calls, tried in increasing position."""

    form = SipRouteForm
    list_display = ("name", "position", "enabled", "called_pattern", "caller_pattern", "header_name", "action", "reject_status")
    list_editable = ("position", "enabled")
    list_filter = ("enabled", "action")
    ordering = ("position", "id")


class EventTypeFilter(admin.SimpleListFilter):
    """The event types worth filtering on, listed rather than read from ten million rows."""

    title = _("event type")
    parameter_name = "event_type"
    TYPES = (
        "call.created",
        "call.answered",
        "call.failed",
        "call.ended",
        "upstream.hangup",
        "upstream.hangup_failed",
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "response.done",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "rate_limits.updated",
        "error",
    )

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(t, t) for t in self.TYPES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CallEvent]) -> QuerySet[CallEvent]:
        return queryset.filter(event_type=self.value()) if self.value() else queryset


@admin.register(CallEvent)
class CallEventAdmin(ReadOnly, admin.ModelAdmin):
    """Events are read-only everywhere: no add, change or delete."""

    list_display = ("created_at", "event_type", "call_link", "actor")
    list_filter = (EventTypeFilter, "actor")
    search_fields = ("call__call_id",)
    search_help_text = _("A call id: that call's events.")
    list_select_related = ("call",)
    ordering = ("-id",)
    show_full_result_count = False
    paginator = BoundedPaginator

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[CallEvent], search_term: str) -> tuple[QuerySet[CallEvent], bool]:
        # One call's events: its id through the unique index, then the call's events through theirs.
        term = search_term.strip()
        return (queryset.filter(call__call_id=term), False) if term else (queryset, False)

    # One event's page: its data as folded-out, highlighted JSON, like the call page's timeline.
    fields = ("call_link", "event_type", "actor", "created_at", "upstream_event_id", "data_shown")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*(f.name for f in CallEvent._meta.fields), "call_link", "data_shown"]

    @admin.display(description=_("data"))
    def data_shown(self, event: CallEvent) -> str:
        return format_html('<pre class="json">{}</pre>', highlighted_json(event.data))

    @admin.display(description=_("call"))
    def call_link(self, event: CallEvent) -> str:
        # A column of our own: the foreign key's header was the untranslated field name ("CALL").
        url = reverse("admin:realtime_call_change", args=[event.call_id])
        return format_html('<a href="{}" class="call-id" title="{}">{}</a>', url, event.call.call_id, short_call_id(event.call.call_id))


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created here (the key is shown once, in a message) and revoked, never deleted:
    the calls they made keep pointing at them."""

    list_display = ("name", "prefix", "owner", "created_at", "last_used_at", "expires_at", "revoked_at", "usable")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), ("expires_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "=prefix", "owner__username")
    list_select_related = ("owner",)
    ordering = ("-created_at", "-id")
    actions = ["revoke_keys"]
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    raw_id_fields = ("owner",)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("name", "owner", "expires_at", "max_active_calls")
        return ("name", "prefix", "owner", "created_at", "last_used_at", "expires_at", "max_active_calls", "revoked_at")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("usable"), boolean=True)
    def usable(self, key: ApiKey) -> bool:
        return key.is_usable()

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ModelForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        raw = services.api_key_create(obj, by=services.AccessActor.of_request(request))
        # The only time the key exists in clear outside the integrator's hands.
        self.message_user(
            request,
            gettext("New API key for “%(name)s”: %(key)s — copy it now, it will not be shown again.") % {"name": obj.name, "key": raw},
            messages.WARNING,
        )

    @admin.action(description=_("Revoke selected API keys"), permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = services.api_key_revoke(queryset, by=services.AccessActor.of_request(request))
        message = ngettext("%(n)d API key revoked.", "%(n)d API keys revoked.", revoked) % {"n": revoked}
        self.message_user(request, message, messages.SUCCESS)


STATUS_LABELS = {"available": _("Available"), "deprecated": _("Deprecated"), "shut_down": _("Shut down"), "retired": _("Retired (alias)")}


def model_catalogue(request: HttpRequest) -> HttpResponse:
    """The model catalogue, read-only: what `GET /api/realtime/models` shows integrators."""
    view = catalogue_view()
    models = [{**model, "status_label": STATUS_LABELS[model["status"]]} for model in view["models"]]
    context = {**admin.site.each_context(request), "title": _("Model catalogue"), "models": models, "default_model": view["default_model"]}
    return TemplateResponse(request, "admin/realtime/models.html", context)


@admin.register(AccessAudit)
class AccessAuditAdmin(admin.ModelAdmin):
    """Who changed access, when and from where: read-only, never deleted."""

    list_display = ("at", "action", "actor", "address", "api_key", "username", "call_ref")
    list_filter = ("action",)
    search_fields = ("actor", "username", "=address", "=api_key__prefix", "=call_ref")
    list_select_related = ("api_key",)
    empty_value_display = "—"
    ordering = ("-at", "-id")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# Outgoing webhooks' pages live with them.
from .webhooks import admin as webhooks_admin  # noqa: E402, F401
