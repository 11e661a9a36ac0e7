from __future__ import annotations

from django.urls import re_path

from .api import CallViewSet, StatsView
from .health import HealthView

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
    re_path(r"^health/?$", HealthView.as_view(), name="health"),
]
