from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.utils.translation import gettext as _

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/realtime/", include("realtime.urls")),
]


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404s under /api/ keep the API's JSON error shape; elsewhere Django's page."""
    if request.path.startswith("/api/"):
        body = {"success": False, "error": {"code": "not_found", "message": _("Not found."), "details": {"path": request.path[:200]}}}
        return JsonResponse(body, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


handler404 = not_found
