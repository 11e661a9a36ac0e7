"""The phone-call paths' queries use their indexes, in order (SQLite's plan, as the embedded
default runs it, and PostgreSQL's, as the scaled topology does)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from realtime import selectors
from realtime.models import SipRoute, WebhookDelivery


def _plan(queryset: QuerySet) -> tuple[set[str], bool]:
    """The indexes the query reads, and whether it sorts."""
    sql, params = queryset.query.sql_with_params()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            steps = [str(row[-1]) for row in cursor.fetchall()]
        return {step.split(" INDEX ")[1].split()[0] for step in steps if " INDEX " in step}, any("TEMP B-TREE" in s for s in steps)
    with transaction.atomic(), connection.cursor() as cursor:
        # Tables this small are read whole otherwise (tests/query_plans.py does the same), and a
        # few rows sorted can cost less than an index walk, as the statistics left by earlier
        # tests say: with sorts weighed down too, a sort remains only where no index gives the order.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    nodes: list[dict[str, Any]] = [(plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]]
    for node in nodes:
        nodes += node.get("Plans", [])
    return {node["Index Name"] for node in nodes if "Index Name" in node}, any(node["Node Type"] == "Sort" for node in nodes)


@pytest.mark.django_db
@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("queryset", "index"),
    [
        # every incoming call: the enabled routes in order
        (lambda: SipRoute.objects.filter(enabled=True).order_by("position", "id"), {"siproute_order_idx"}),
        # GET /api/realtime/calls?source=sip
        (lambda: selectors.call_list(source="sip"), {"call_source_recent_idx"}),
        # the sweeper forgetting old webhook deliveries
        (lambda: WebhookDelivery.objects.filter(received_at__lt=timezone.now() - timedelta(hours=72)), {"webhook_received_idx"}),
        # a webhook's replay check: the unique constraint's index (on PostgreSQL, it or Django's
        # pattern index beside it, which answers equality as well)
        (
            lambda: WebhookDelivery.objects.filter(webhook_id="wh_1"),
            {
                "sqlite_autoindex_realtime_webhookdelivery_1",
                "realtime_webhookdelivery_webhook_id_key",
                "realtime_webhookdelivery_webhook_id_8fc1c980_like",
            },
        ),
    ],
)
def test_it_uses_an_index(queryset, index):
    used, sorts = _plan(queryset())

    assert used and used <= index, used
    assert not sorts
