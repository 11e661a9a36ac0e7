from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .api import CallViewSet, ModelViewSet, StatsViewSet

app_name = "realtime"


class OptionalSlashRouter(SimpleRouter):
    """Every path works with and without a trailing slash, as integrators write both."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("calls", CallViewSet, basename="call")
router.register("stats", StatsViewSet, basename="stats")
router.register("models", ModelViewSet, basename="model")
urlpatterns = router.urls
