"""Every query of the webhook paths (the outbox write, the dispatcher's claim and outcome, the
delivery log, send again, enabling) is answered from an index (tests/query_plans.py), so each
costs the same with a long delivery history as with none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from realtime import services, upstream
from realtime.models import Call, CallEvent
from realtime.sessions import parse_session
from realtime.webhooks import dispatcher
from realtime.webhooks import services as webhook_services
from realtime.webhooks.models import WebhookMessage

from . import query_plans

# Claims and leases, and plans, differ on PostgreSQL: `make test` runs these there too.
pytestmark = pytest.mark.postgresql


def _assert_indexed(run: Callable[[], Any]) -> tuple[Any, list[tuple[str, Any]]]:
    with query_plans.capture() as queries:
        result = run()
    assert query_plans.checked(queries) > 0, "the path ran no query on the deliveries: nothing was checked"
    assert query_plans.problems(queries) == []
    return result, queries


@pytest.fixture
def history(db: None, make_key) -> dict[str, Any]:
    """Two endpoints, a few hundred deliveries already delivered or failed, and calls to move."""
    key, raw = make_key("acme")
    endpoint = webhook_services.endpoint_create(
        url="http://127.0.0.1:9/a", events=["call.created", "call.answered", "call.ended"], api_key=key
    )
    other = webhook_services.endpoint_create(url="http://127.0.0.1:9/b", events=["call.ended"], api_key=None)
    now = timezone.now()
    WebhookMessage.objects.bulk_create(
        WebhookMessage(
            endpoint=(endpoint, other)[i % 2],
            event_type="call.ended",
            payload={},
            status=("delivered", "failed")[(i // 2) % 2],
            next_attempt_at=None,
            give_up_at=now,
            attempts=1,
        )
        for i in range(400)
    )
    return {"key": key, "raw": raw, "endpoint": endpoint}


def test_it_writes_the_outbox_through_indexes(history):
    def run() -> None:
        call = services.call_open(offer="v=0", session=parse_session({}), source="webrtc", actor="api", api_key=history["key"])
        services.call_answer(call=call, created=upstream.CreatedCall(upstream_id="rtc_1", sdp_answer="v=0"))
        services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)

    _assert_indexed(run)
    assert WebhookMessage.objects.filter(status="pending").count() == 4


def test_it_claims_and_records_through_indexes(history):
    services.call_open(offer="v=0", session=parse_session({}), source="webrtc", actor="api", api_key=history["key"])
    now = timezone.now()

    claimed, queries = _assert_indexed(lambda: dispatcher.claim(now=now, limit=10))
    assert len(claimed) == 1
    select = next(sql for sql, _ in queries if sql.lstrip().upper().startswith("SELECT") and "next_attempt_at" in sql and "LIMIT" in sql)
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + select, next(p for s, p in queries if s == select))
            assert "webhookmsg_due_idx" in " ".join(row[-1] for row in cursor.fetchall())
    outcome = dispatcher.Outcome(ok=False, status=500, latency_ms=3, error="HTTP 500")
    _assert_indexed(lambda: dispatcher.record(message=claimed[0], outcome=outcome, now=now))


def test_it_shows_the_delivery_log_and_sends_again_through_indexes(history, settings):
    settings.REALTIME_LOCAL_MODE = False
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {history['raw']}")
    path = f"/api/realtime/webhooks/{history['endpoint'].pk}"
    failed = WebhookMessage.objects.filter(endpoint=history["endpoint"], status="failed").first()

    response, _ = _assert_indexed(lambda: client.get(f"{path}/deliveries?limit=20"))
    assert response.status_code == 200 and response.json()["count"] == 200
    response, _ = _assert_indexed(lambda: client.get(f"{path}/deliveries?status=failed"))
    assert response.status_code == 200
    response, _ = _assert_indexed(lambda: client.post(f"{path}/deliveries/{failed.message_id}/resend"))
    assert response.status_code == 202


def test_it_resumes_a_disabled_endpoint_through_indexes(history):
    endpoint = history["endpoint"]
    webhook_services.endpoint_update(endpoint=endpoint, changes={"enabled": False})

    _assert_indexed(lambda: webhook_services.endpoint_update(endpoint=endpoint, changes={"enabled": True}))


def test_it_shows_the_delivery_log_in_the_admin_through_indexes(history, admin_client):
    endpoint = history["endpoint"]

    for query in ["", "?status=failed", "?event_type=call.ended", f"?endpoint__id__exact={endpoint.pk}"]:
        response, _ = _assert_indexed(lambda query=query: admin_client.get(f"/admin/realtime/webhookmessage/{query}"))
        assert response.status_code == 200, query
