"""The database thread keeps its connection from one job to the next (no pool round trip, no
health check per job), and still replaces a connection that the server ended."""

from __future__ import annotations

import pytest
from django.db import connection, connections

from realtime import services


def _raw() -> object:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return connection.connection


@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_database_threads_connection_between_jobs():
    raw = _raw()

    services._keep_usable_connection()

    assert connection.connection is raw
    assert _raw() is raw


@pytest.mark.django_db(transaction=True)
def test_it_replaces_a_connection_the_server_ended_before_the_next_job():
    raw = _raw()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        # Ended from another session, as a restart or an idle timeout would: Django does not know.
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])  # once it has ended
        finally:
            other.close()
        assert connection.errors_occurred is False
        replaced = True
    else:
        # SQLite has no server to end it: the connection stays.
        replaced = False

    services._keep_usable_connection()

    assert (connection.connection is None) is replaced
    assert (_raw() is not raw) is replaced
