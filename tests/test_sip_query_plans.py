"""The phone-call paths' queries use their indexes (SQLite's plan, as the embedded default runs it)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from realtime import selectors
from realtime.models import SipRoute, WebhookDelivery


def _plan(queryset: QuerySet) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return " | ".join(str(row[-1]) for row in cursor.fetchall())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("queryset", "index"),
    [
        # every incoming call: the enabled routes in order
        (lambda: SipRoute.objects.filter(enabled=True).order_by("position", "id"), "siproute_order_idx"),
        # GET /api/realtime/calls?source=sip
        (lambda: selectors.call_list(source="sip"), "call_source_recent_idx"),
        # the sweeper forgetting old webhook deliveries
        (lambda: WebhookDelivery.objects.filter(received_at__lt=timezone.now() - timedelta(hours=72)), "webhook_received_idx"),
        # a webhook's replay check (the unique constraint's index)
        (lambda: WebhookDelivery.objects.filter(webhook_id="wh_1"), "sqlite_autoindex_realtime_webhookdelivery"),
    ],
)
def test_it_uses_an_index(queryset, index):
    plan = _plan(queryset())

    assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan
