from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.utils.translation import gettext as _

# Staff sign in once, on one page in the project's style, for the admin and the demo page alike.
admin.site.login_template = "registration/login.html"

urlpatterns = [
    path(
        "accounts/login/",
        # AdminAuthenticationForm: only active staff accounts can sign in here.
        auth_views.LoginView.as_view(authentication_form=AdminAuthenticationForm),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/realtime/", include("realtime.urls")),
]

if settings.LOCALREALTIME_ENABLED:
    # The embedded engine answers where OPENAI_BASE_URL points by default: this server's /v1.
    urlpatterns.append(path("v1/", include("localrealtime.urls")))


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404s under /api/ keep the API's JSON error shape; elsewhere Django's page."""
    if request.path.startswith("/api/"):
        body = {"success": False, "error": {"code": "not_found", "message": _("Not found."), "details": {"path": request.path[:200]}}}
        return JsonResponse(body, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


handler404 = not_found
