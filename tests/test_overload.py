"""Past capacity, or with a shared store away, the API answers 429/503 with Retry-After in our
error shape: never a 500."""

from __future__ import annotations

import pytest

from realtime.models import Call


@pytest.mark.django_db
def test_it_answers_503_with_retry_after_when_the_shared_cache_is_away(api, settings):
    # The throttles count in the cache: Redis at an address where nothing listens.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}}

    response = api.get("/api/realtime/calls")

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json() == {
        "success": False,
        "error": {"code": "service_unavailable", "message": "The service is busy; try again shortly.", "details": {}},
    }


@pytest.mark.django_db
def test_it_tells_a_client_over_the_concurrency_limit_when_to_retry(api, settings, make_call, sdp_offer):
    settings.REALTIME_MAX_ACTIVE_CALLS = 1
    make_call()

    response = api.post("/api/realtime/calls", {"sdp": sdp_offer}, format="json")

    assert response.status_code == 429
    assert response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "too_many_active_calls"
    assert Call.objects.count() == 1
