"""Under DEBUG (local mode), a database connection keeps only its last statements for
`connection.queries`, not Django's 9,000 with every call's SDP in their parameters."""

from __future__ import annotations

import pytest
from django.db import connections

from realtime.apps import DEBUG_QUERIES_KEPT


@pytest.mark.django_db
def test_it_keeps_only_the_last_statements_of_a_connection_under_debug(settings):
    settings.DEBUG = True
    connection = connections.create_connection("default")
    try:
        with connection.cursor() as cursor:
            for n in range(DEBUG_QUERIES_KEPT + 50):
                cursor.execute(f"SELECT {n}")
        with pytest.warns(UserWarning, match="only the last 100 queries"):
            kept = connection.queries
    finally:
        connection.close()

    assert len(kept) == DEBUG_QUERIES_KEPT
    assert kept[-1]["sql"] == f"SELECT {DEBUG_QUERIES_KEPT + 49}"
    assert kept[0]["sql"] == "SELECT 50"


@pytest.mark.django_db
def test_it_leaves_the_statement_log_alone_without_debug(settings):
    settings.DEBUG = False
    connection = connections.create_connection("default")
    try:
        connection.ensure_connection()
        limit = connection.queries_log.maxlen
    finally:
        connection.close()

    assert limit == 9000
