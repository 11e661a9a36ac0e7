from __future__ import annotations

from django.urls import re_path

from .api import CallViewSet, SipRouteViewSet, StatsView, sip_webhook

app_name = "realtime"

# Every path works with and without a trailing slash, as integrators write both.
urlpatterns = [
    re_path(r"^calls/?$", CallViewSet.as_view({"get": "list", "post": "create"}), name="call-list"),
    re_path(
        r"^calls/(?P<call_id>[^/]+)/?$",
        CallViewSet.as_view({"get": "retrieve", "delete": "destroy"}),
        name="call-detail",
    ),
    re_path(r"^calls/(?P<call_id>[^/]+)/events/?$", CallViewSet.as_view({"get": "events"}), name="call-events"),
    re_path(r"^calls/(?P<call_id>[^/]+)/transcript/?$", CallViewSet.as_view({"get": "transcript"}), name="call-transcript"),
    re_path(r"^stats/?$", StatsView.as_view(), name="stats"),
    re_path(r"^calls/(?P<call_id>[^/]+)/transfer/?$", CallViewSet.as_view({"post": "transfer"}), name="call-transfer"),
    re_path(r"^sip/webhook/?$", sip_webhook, name="sip-webhook"),
    re_path(r"^sip/routes/?$", SipRouteViewSet.as_view({"get": "list", "post": "create"}), name="sip-route-list"),
    re_path(
        r"^sip/routes/(?P<pk>[0-9]+)/?$",
        SipRouteViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="sip-route-detail",
    ),
]
