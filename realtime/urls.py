from __future__ import annotations

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from .api import CallViewSet, ModelViewSet, SipRouteViewSet, StatsViewSet, sip_webhook
from .health import HealthView
from .views import api_not_found
from .webhooks.api import WebhookViewSet

app_name = "realtime"


class OptionalSlashRouter(SimpleRouter):
    """Every path works with and without a trailing slash, as integrators write both."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("calls", CallViewSet, basename="call")
router.register("stats", StatsViewSet, basename="stats")
router.register("sip/routes", SipRouteViewSet, basename="sip-route")
router.register("models", ModelViewSet, basename="model")
router.register("webhooks", WebhookViewSet, basename="webhook")
urlpatterns = [
    # OpenAI's signed webhooks: a plain view, so the signature is checked on the raw body.
    re_path(r"^sip/webhook/?$", sip_webhook, name="sip-webhook"),
    re_path(r"^health/?$", HealthView.as_view(), name="health"),
    *router.urls,
    # Every other path under /api/realtime/: our JSON 404, also with DEBUG on (where Django's own
    # handler would answer with its HTML page).
    re_path(r"", api_not_found),
]
