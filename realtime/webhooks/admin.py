"""Admin pages of outgoing webhooks: endpoints (with a notice when one is disabled) and the
delivery log, with "send again" and "send a test event". Changes go through `webhooks.services`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from ..admin import BoundedPaginator
from . import guard, services
from .models import DISABLED_BY_HAND, TEST_EVENT, EventType, WebhookEndpoint, WebhookMessage


class EndpointForm(forms.ModelForm):
    url = forms.URLField(label=_("URL"), max_length=2000, assume_scheme="https")
    events = forms.MultipleChoiceField(label=_("event types"), choices=EventType.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "description", "events", "api_key", "enabled"]

    def clean_url(self) -> str:
        url: str = self.cleaned_data["url"]
        try:
            guard.check(url)
        except guard.Refused as exc:
            raise forms.ValidationError(str(exc)) from None
        return url


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ("url", "api_key", "event_list", "enabled", "failure_streak", "disabled_reason", "created_at")
    list_filter = ("enabled",)
    search_fields = ("url", "description")
    readonly_fields = ("disabled_at", "disabled_reason", "failure_streak", "failing_since", "previous_secret_until", "created_at")
    raw_id_fields = ("api_key",)
    actions = ["send_test_event", "rotate_secret", "enable"]

    @admin.display(description=_("event types"))
    def event_list(self, endpoint: WebhookEndpoint) -> str:
        return ", ".join(endpoint.events)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method == "GET":
            failing = WebhookEndpoint.objects.filter(enabled=False, disabled_at__isnull=False).exclude(disabled_reason=DISABLED_BY_HAND)
            self._notice_disabled(request, failing)
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "GET":
            self._notice_disabled(request, WebhookEndpoint.objects.filter(pk=object_id, enabled=False).exclude(disabled_reason=""))
        return super().change_view(request, object_id, form_url, extra_context)

    def _notice_disabled(self, request: HttpRequest, disabled: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in disabled[:10]:
            messages.warning(
                request,
                gettext("Webhook endpoint %(url)s is disabled (%(reason)s): its deliveries wait until it is enabled again.")
                % {"url": endpoint.url, "reason": endpoint.disabled_reason},
            )

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form: forms.ModelForm, change: bool) -> None:
        data = {name: form.cleaned_data[name] for name in EndpointForm.Meta.fields if name in form.cleaned_data}
        if change:
            fresh = WebhookEndpoint.objects.get(pk=obj.pk)
            services.endpoint_update(endpoint=fresh, changes=data)
            return
        endpoint = services.endpoint_create(**data)
        obj.pk = endpoint.pk
        messages.info(request, gettext("Signing secret of the new endpoint (shown once): %(secret)s") % {"secret": endpoint.secret})

    @admin.action(description=_("Send a test event"), permissions=["change"])
    def send_test_event(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        count = len([services.send_test(endpoint=endpoint) for endpoint in queryset])
        messages.success(request, ngettext("%(n)d test event queued.", "%(n)d test events queued.", count) % {"n": count})

    @admin.action(description=_("Rotate the signing secret"), permissions=["change"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            services.endpoint_rotate_secret(endpoint=endpoint)
            messages.info(
                request,
                gettext("New signing secret of %(url)s (shown once): %(secret)s") % {"url": endpoint.url, "secret": endpoint.secret},
            )

    @admin.action(description=_("Enable (and send what waited)"), permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset.filter(enabled=False):
            services.endpoint_update(endpoint=endpoint, changes={"enabled": True})


class EventTypeFilter(admin.SimpleListFilter):
    """The event types we send, from the catalogue: listing those present would read the whole log."""

    title = _("event type")
    parameter_name = "event_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [*EventType.choices, (TEST_EVENT, TEST_EVENT)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(event_type=self.value()) if self.value() else queryset


@admin.register(WebhookMessage)
class WebhookMessageAdmin(admin.ModelAdmin):
    list_display = (
        "message_id",
        "endpoint",
        "event_type",
        "status",
        "attempts",
        "response_status",
        "latency_ms",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("status", EventTypeFilter)
    search_fields = ("=message_id",)
    list_select_related = ("endpoint",)
    raw_id_fields = ("endpoint", "call")
    actions = ["send_again"]
    show_full_result_count = False
    # The log grows with every event: count a page's worth, not the history.
    paginator = BoundedPaginator

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in WebhookMessage._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description=_("Send again"), permissions=["change"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[WebhookMessage]) -> None:
        count = sum(1 for message in queryset if services.resend(message=message))
        messages.success(request, ngettext("%(n)d delivery queued again.", "%(n)d deliveries queued again.", count) % {"n": count})
        if count < len(queryset):
            messages.warning(request, gettext("Deliveries still pending were left as they are: they are being sent or retried."))
