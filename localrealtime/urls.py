from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("realtime/calls", views.calls),
    path("realtime/calls/<str:call_id>/hangup", views.hangup),
    path("_local/faults", views.faults),
    path("_local/calls/<str:call_id>", views.call_detail),
    path("_local/calls/<str:call_id>/drop_sideband", views.drop_sideband),
]
