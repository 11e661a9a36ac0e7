from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.utils.translation import gettext as _
from django.views.i18n import JavaScriptCatalog

from realtime import views as realtime_views

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
    path("realtime-api.html", realtime_views.demo, name="realtime-demo"),
    # The demo page's translations (served here, never from a CDN) and its language switch.
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("i18n/", include("django.conf.urls.i18n")),
]


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404s under /api/ keep the API's JSON error shape; elsewhere Django's page."""
    if request.path.startswith("/api/"):
        body = {"success": False, "error": {"code": "not_found", "message": _("Not found."), "details": {"path": request.path[:200]}}}
        return JsonResponse(body, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


handler404 = not_found
