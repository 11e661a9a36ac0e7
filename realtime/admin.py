"""Support staff's view of calls: browse, search, filter, audit, terminate.

Ending calls loops over `services.call_hangup` (never a bulk UPDATE), so each ended call gets its
`call.ended` event, its push and its upstream hangup, exactly as through the API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from . import selectors, services
from .exceptions import CallStateConflict
from .models import AccessAudit, ApiKey, Call, CallEvent

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
        ended = queryset.exclude(status__in=Call.ENDABLE).exclude(upstream_id="")
        if self.value() == "unconfirmed":
            return ended.filter(upstream_closed_at__isnull=True)
        if self.value() == "confirmed":
            return ended.filter(upstream_closed_at__isnull=False)
        return queryset


@admin.register(Call)
class CallAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("call_id", "status", "model", "voice", "source", "created_at", "duration", "end_reason", "cost")
    list_filter = ("status", "end_reason", UpstreamHangupFilter, "source", "model", "voice")
    search_fields = ("=call_id", "=upstream_id")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    list_per_page = 50
    show_full_result_count = False
    actions = ["end_calls"]
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
        (_("Transcript"), {"fields": ("transcript", "sideband_events")}),
        (_("Usage and cost"), {"fields": ("cost_usd", "input_tokens", "output_tokens", "usage")}),
        (_("Monitoring"), {"classes": ("collapse",), "fields": ("monitor_owner", "monitor_lease_until")}),
        (_("SDP"), {"classes": ("collapse",), "fields": ("sdp_offer", "sdp_answer")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Call]:
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name == "realtime_call_changelist":
            # The list never shows SDPs or session blobs; don't load them.
            queryset = queryset.defer("sdp_offer", "sdp_answer", "session_requested", "session_upstream", "instructions")
        return queryset

    def get_readonly_fields(self, request: HttpRequest, obj: Call | None = None) -> list[str]:
        # An audit record: nothing on it is edited by hand, state changes go through the action.
        return [*(f.name for f in Call._meta.fields), "transcript", "sideband_events"]

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


@admin.register(CallEvent)
class CallEventAdmin(ReadOnly, admin.ModelAdmin):
    """Events are read-only everywhere: no add, change or delete."""

    list_display = ("created_at", "event_type", "call", "actor")
    list_filter = ("event_type", "actor")
    search_fields = ("=call__call_id",)
    list_select_related = ("call",)
    date_hierarchy = "created_at"
    ordering = ("-id",)
    show_full_result_count = False

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


@admin.register(AccessAudit)
class AccessAuditAdmin(admin.ModelAdmin):
    """Who changed access, when and from where: read-only, never deleted."""

    list_display = ("at", "action", "actor", "address", "api_key", "username")
    list_filter = ("action",)
    search_fields = ("actor", "username", "=address", "=api_key__prefix")
    list_select_related = ("api_key",)
    ordering = ("-at", "-id")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
