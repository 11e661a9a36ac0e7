from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.utils.translation import gettext as _
from django.views import defaults
from django.views.i18n import JavaScriptCatalog
from drf_spectacular.views import SpectacularAPIView

from realtime import admin as realtime_admin
from realtime import dashboard
from realtime import views as realtime_views
from realtime.apidocs import RedocView, SwaggerView
from realtime.exceptions import error_body

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
    path("admin/dashboard/", admin.site.admin_view(dashboard.view), name="admin-dashboard"),
    path("admin/realtime/models/", admin.site.admin_view(realtime_admin.model_catalogue), name="admin-model-catalogue"),
    path("admin/", admin.site.urls),
    path("api/realtime/", include("realtime.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file: our CSP allows no inline script.
    path("api/docs/", SwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", RedocView.as_view(url_name="schema"), name="redoc"),
    path("realtime-api.html", realtime_views.demo, name="realtime-demo"),
    # The demo page's translations (served here, never from a CDN) and its language switch.
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("i18n/", include("django.conf.urls.i18n")),
]


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404s under /api/ keep the API's JSON error shape; elsewhere Django's page."""
    if request.path.startswith("/api/"):
        return realtime_views.api_not_found(request, exception)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """500s under /api/ keep the API's JSON error shape; elsewhere Django's page. Django has already
    sent `got_request_exception` and logged the error by the time this runs."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("server_error", _("An unexpected error occurred.")), status=500)
    return defaults.server_error(request)


handler404 = not_found
handler500 = server_error
