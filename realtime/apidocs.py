"""The API's docs pages (Swagger UI, Redoc) from our own files, under a policy that lets them style
themselves: both set styles at run time (Redoc all of its styles, through styled-components), which
`style-src 'self'` blocks (Redoc's page stays blank). Scripts stay `'self'` only. Separate from
`realtime.openapi`: drf-spectacular's views import the schema class from there."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerSplitView

from .middleware import content_security_policy


class _StylesAllowed:
    # Added to the site's policy (the middleware never overrides a policy a view set).
    extra_policy = ""

    @extend_schema(exclude=True)  # as drf-spectacular's own `get`: a page, not part of the API
    def get(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().get(request, *args, **kwargs)  # type: ignore[misc]
        policy = content_security_policy(request).replace("style-src 'self'", "style-src 'self' 'unsafe-inline'", 1)
        response.headers["Content-Security-Policy"] = policy + self.extra_policy
        return response


class SwaggerView(_StylesAllowed, SpectacularSwaggerSplitView):
    pass


class RedocView(_StylesAllowed, SpectacularRedocView):
    # With our icon and without drf-spectacular's web fonts from Google.
    template_name = "realtime/redoc.html"
    # Redoc's search index runs in a worker it makes from its own script (a blob: URL).
    extra_policy = "; worker-src 'self' blob:"
