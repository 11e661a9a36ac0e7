"""Support staff's view of calls: browse, search, filter, audit, terminate.

Ending calls loops over `services.call_hangup` (never a bulk UPDATE), so each ended call gets its
`call.ended` event, its push and its upstream hangup, exactly as through the API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.db.models.expressions import Combinable
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import ValidationError

from . import counters, exports, quality, selectors, services
from .api import catalogue_view
from .exceptions import CallStateConflict, RealtimeError
from .models import AccessAudit, ApiKey, Call, CallEvent, SipRoute
from .serializers import ROUTE_FIELDS, TransferInputSerializer, validate_route_session

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise


class ReadOnly:
    """Audit records: shown, never added, changed or deleted by hand. Calls change only through
    the terminate action, which goes through `services` like every other entry point."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CallEventInline(ReadOnly, admin.TabularInline):
    model = CallEvent
    fields = ("created_at", "event_type", "actor", "data")
    readonly_fields = fields
    ordering = ("id",)
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[CallEvent]:
        # A monitored call can have thousands of sideband events: the page lists the call's own
        # audit trail, and links to the sideband events (see CallAdmin.sideband_events).
        return super().get_queryset(request).filter(upstream_event_id="")


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
            # The few unconfirmed come from their partial index (call_hangup_retry_idx), in a
            # subquery: asked directly, planners would walk the newest-first index past every
            # confirmed call looking for them.
            unconfirmed = Call.objects.filter(ended, upstream_closed_at__isnull=True).order_by().values("pk")
            return queryset.filter(pk__in=unconfirmed)
        if self.value() == "confirmed":
            return queryset.filter(ended, upstream_closed_at__isnull=False)
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


class IdSearch:
    """Admin search by id: a full call id or upstream id, or the start of one (what was copied from
    a log or a ticket), through their indexes. Results come in id order, so a short prefix still
    reads one page of the index, not every match."""

    search_field = ""

    def id_field(self, term: str) -> str:
        return "upstream_id" if term.startswith("rtc") else "call_id"

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        if not self.search_field:  # calls: the API's `q` (ids, a caller number, words said)
            return selectors.call_search(queryset, term), False
        return queryset.filter(selectors.prefix(self.search_field + self.id_field(term), term)), False


class TransferActionForm(ActionForm):
    target_uri = forms.CharField(label=_("Transfer to (sip: or tel: URI)"), required=False, max_length=255)


@admin.register(Call)
class CallAdmin(ReadOnly, IdSearch, admin.ModelAdmin):
    list_display = ("call_id", "status", "model", "voice", "source", "created_at", "duration", "end_reason", "cost")
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
    sortable_by = ("call_id", "created_at", "cost")
    list_per_page = 50
    show_full_result_count = False
    paginator = BoundedPaginator
    actions = ["end_calls", "transfer_calls", "export_calls", "erase_call_data"]
    action_form = TransferActionForm
    inlines = [CallEventInline]
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
                    "duration_seconds",
                    "max_duration_seconds",
                    "upstream_closed_at",
                    "hangup_attempts",
                    "hangup_retry_at",
                )
            },
        ),
        (
            _("Session requested"),
            {"fields": ("model", "voice", "modalities", "instructions", "temperature", "max_output_tokens", "session_requested")},
        ),
        (_("Sent upstream"), {"fields": ("upstream_model", "session_upstream")}),
        (_("Phone call (SIP)"), {"fields": ("sip_caller", "sip_called", "sip_route", "sip_status", "transferred_to", "sip_headers")}),
        (_("Transcript"), {"fields": ("transcript", "sideband_events")}),
        (_("Usage and cost"), {"fields": ("cost_usd", "input_tokens", "output_tokens", "usage")}),
        (_("Call quality"), {"fields": ("quality_metrics",)}),
        (_("Monitoring"), {"classes": ("collapse",), "fields": ("monitor_owner", "monitor_lease_until")}),
        (_("SDP"), {"classes": ("collapse",), "fields": ("sdp_offer", "sdp_answer")}),
    )

    def get_ordering(self, request: HttpRequest) -> list[str | Combinable] | tuple[str | Combinable, ...] | tuple[()]:
        term = request.GET.get("q", "").strip()
        # Search results in the order of the index that finds them (see IdSearch).
        return [self.id_field(term)] if term else super().get_ordering(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Call]:
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name == "realtime_call_changelist":
            # The list never shows SDPs or session blobs; don't load them.
            queryset = queryset.defer("sdp_offer", "sdp_answer", "session_requested", "session_upstream", "instructions")
        return queryset

    def get_readonly_fields(self, request: HttpRequest, obj: Call | None = None) -> list[str]:
        # An audit record: nothing on it is edited by hand, state changes go through the action.
        return [*(f.name for f in Call._meta.fields), "transcript", "sideband_events", "quality_metrics"]

    @admin.display(description=_("quality metrics"))
    def quality_metrics(self, call: Call) -> str:
        return quality.metrics_table(call.metrics)

    @admin.display(description=_("cost"), ordering="cost_usd")
    def cost(self, call: Call) -> str:
        return "—" if call.cost_usd is None else f"${call.cost_usd:.4f}"

    @admin.display(description=_("transcript"))
    def transcript(self, call: Call) -> str:
        entries = selectors.call_transcript(call=call)
        if not entries:
            return gettext("No transcript.")
        roles = {"user": _("Caller"), "assistant": _("Assistant")}
        rows = format_html_join(
            "",
            '<tr><td style="white-space:nowrap">{}</td><th style="white-space:nowrap">{}</th><td>{}</td></tr>',
            (
                (
                    date_format(timezone.localtime(datetime.fromtimestamp(e["timestamp"], tz=UTC)), "TIME_FORMAT"),
                    roles[e["role"]],
                    e["text"],
                )
                for e in entries
            ),
        )
        return format_html("<table>{}</table>", rows)

    @admin.display(description=_("sideband events"))
    def sideband_events(self, call: Call) -> str:
        count = call.events.exclude(upstream_event_id="").count()
        url = reverse("admin:realtime_callevent_changelist") + "?" + urlencode({"q": call.call_id})
        return format_html('<a href="{}">{}</a>', url, ngettext("%(n)d event", "%(n)d events", count) % {"n": count})

    @admin.display(description=_("duration"), ordering="duration_seconds")
    def duration(self, call: Call) -> str:
        return "—" if call.duration_seconds is None else f"{call.duration_seconds:.0f} s"

    def has_erase_call_data_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("realtime.erase_call_data")

    @admin.action(description=_("Erase the personal data of selected calls"), permissions=["erase_call_data"])
    def erase_call_data(self, request: HttpRequest, queryset: QuerySet[Call]) -> None:
        """A person's erase request (docs/privacy.md): the same audited path as DELETE .../data."""
        erased = skipped = 0
        by = services.AccessActor.of_request(request)
        for call in queryset.only("pk", "call_id"):
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
        for call in queryset.only("pk", "call_id", "status", "created_at", "upstream_id"):
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

    @admin.action(description=_("Transfer selected phone calls"), permissions=["end_call"])
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

    list_display = ("created_at", "event_type", "call", "actor")
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

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in CallEvent._meta.fields]


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
