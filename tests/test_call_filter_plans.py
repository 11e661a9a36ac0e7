"""Every filter and ordering of the call list and export is answered from an index (plans
checked on SQLite, and on PostgreSQL by `make test`), so each costs the same at a million calls
as at ten; each ordering reads its rows in order from an index, never sorting the matches."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from realtime.models import Call

from . import query_plans
from .test_api_call_filters import calls  # noqa: F401  (the fixture: five calls of every kind)

FILTERS = [
    {},
    {"status": "ended"},
    {"source": "sip"},
    {"model": "gpt-realtime"},
    {"voice": "echo"},
    {"end_reason": "idle_timeout"},
    {"created_after": "2026-03-01T11:15:00Z"},
    {"created_before": 1772363700},
    {"created_after": "2026-03-01T11:15:00Z", "created_before": "2026-03-01T11:45:00Z"},
    {"min_duration": 100},
    {"max_duration": 120},
    {"min_cost": "0.25"},
    {"min_latency": 1000},
    {"caller": "+3314"},
    {"q": "colis"},
    {"q": "colis electricite"},
    {"q": "call_0a1b"},
    {"q": "rtc_bb"},
    {"q": "+33 1 40"},
    {"status": "ended", "voice": "echo", "min_cost": "0.001"},
    {"model": "gpt-realtime", "created_after": "2026-03-01T11:00:00Z", "q": "colis"},
]
# A filter with another order: the planner reads either the order's index (skipping rows that do
# not match) or the filter's (sorting its matches), as its statistics say is cheaper; both indexed.
COMBINED = [
    {"status": "ended", "ordering": "-duration"},
    {"voice": "echo", "ordering": "-cost"},
    {"model": "gpt-realtime", "ordering": "-latency"},
    {"created_after": "2026-03-01T11:15:00Z", "ordering": "cost"},
    {"q": "colis", "ordering": "-duration"},
    {"min_duration": 10, "ordering": "-cost"},
]
# The test client reads an export's stream whole (the ASGI server sends it page by page).
pytestmark = pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
ORDERINGS = ["-created_at", "created_at", "-duration", "duration", "-cost", "cost", "-latency", "latency"]


def _page_queries(queries: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The queries reading a page of calls (not counts, not counters)."""
    return [(sql, p) for sql, p in queries if '"realtime_call"' in sql and "ORDER BY" in sql and "COUNT(" not in sql]


def _checked(api: Any, path: str, params: dict[str, Any]) -> list[tuple[str, Any]]:
    with query_plans.capture() as queries:
        response = api.get(path, params)
        if path.endswith("export"):
            b"".join(response)
    assert response.status_code == 200
    assert query_plans.checked(queries) > 0
    assert query_plans.problems(queries) == []
    return queries


@pytest.mark.parametrize("params", FILTERS, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()) or "none")
def test_it_filters_the_list_and_counts_through_indexes(api, calls, params):  # noqa: F811
    _checked(api, "/api/realtime/calls", {"limit": 2, **params})


@pytest.mark.parametrize("params", COMBINED, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()))
def test_it_combines_a_filter_and_an_order_through_indexes(api, calls, params):  # noqa: F811
    _checked(api, "/api/realtime/calls", {"limit": 2, **params})
    _checked(api, "/api/realtime/calls/export", params)


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_it_reads_each_order_from_an_index_first_page_and_deep_pages(api, calls, ordering):  # noqa: F811
    first = _checked(api, "/api/realtime/calls", {"limit": 1, "ordering": ordering})
    cursor = api.get("/api/realtime/calls", {"limit": 1, "ordering": ordering}).json()["next_cursor"]
    deep = _checked(api, "/api/realtime/calls", {"limit": 1, "ordering": ordering, "cursor": cursor})

    pages = _page_queries(first) + _page_queries(deep)
    assert len(pages) == 2
    assert query_plans.sorts(pages) == []


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_it_exports_in_keyset_pages_each_read_in_order_from_an_index(api, calls, ordering, monkeypatch):  # noqa: F811
    monkeypatch.setattr("realtime.exports.PAGE", 1)

    queries = _checked(api, "/api/realtime/calls/export", {"ordering": ordering})

    pages = _page_queries(queries)
    assert len(pages) >= 3
    assert query_plans.sorts(pages) == []


def test_it_finds_a_word_from_the_word_index(calls):  # noqa: F811
    from realtime import selectors

    with query_plans.capture() as queries:
        found = list(selectors.call_filter(Call.objects.order_by(), q="colis").values_list("pk", flat=True))

    assert len(found) == 2
    plans = query_plans.problems(queries)
    assert plans == []
    sql, params = queries[0]
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            details = " ".join(row[-1] for row in cursor.fetchall())
        assert "INDEX" in details and "(word=?)" in details


@pytest.mark.parametrize("term", ["colis", "+33 1 40", "rtc_bb", "call_0"])
def test_the_admin_searches_calls_like_the_api_through_indexes(admin_client, calls, term):  # noqa: F811
    with query_plans.capture() as queries:
        page = admin_client.get("/admin/realtime/call/", {"q": term})

    assert page.status_code == 200
    assert query_plans.problems(queries) == []
    if term == "colis":
        assert calls["a"].call_id in page.content.decode() and calls["c"].call_id in page.content.decode()
        assert calls["b"].call_id not in page.content.decode()


# Ranges and prefixes of one column, listed in another column's order (see selectors.ranged).
RANGES = [
    {"min_duration": 100},
    {"max_duration": 120},
    {"min_cost": "0.25"},
    {"min_latency": 1000},
    {"caller": "+3314"},
    {"q": "+33 1 40"},
    {"q": "call_"},
    {"q": "rtc_bb"},
    {"status": "ended", "voice": "echo", "min_cost": "0.001"},
    {"created_after": "2026-03-01T11:15:00Z", "ordering": "cost"},
    {"min_duration": 10, "ordering": "-cost"},
    {"min_cost": "0.001", "ordering": "created_at"},
]


@pytest.mark.parametrize("params", RANGES, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()))
@pytest.mark.parametrize("wide", [False, True], ids=["narrow", "wide"])
def test_it_lists_a_range_in_another_order_without_sorting_its_matches(api, calls, params, wide, monkeypatch):  # noqa: F811
    # The same calls whether the range is read from its index (narrow) or checked while walking
    # the order's index (wide: here every range with a match, DENSE being 0).
    expected = sorted(c["call_id"] for c in api.get("/api/realtime/calls", {"limit": 100, **params}).json()["data"])
    if wide:
        monkeypatch.setattr("realtime.selectors.DENSE", 0)

    queries = _checked(api, "/api/realtime/calls", {"limit": 100, **params})
    listed = api.get("/api/realtime/calls", {"limit": 100, **params}).json()["data"]

    assert sorted(c["call_id"] for c in listed) == expected
    assert expected  # each matches calls of the fixture
    pages = _page_queries(queries)
    assert len(pages) == 1
    if wide and connection.vendor == "sqlite":
        # Walked in the order's index: the LIMIT stops the read (PostgreSQL plans from statistics).
        assert query_plans.sorts(pages) == []


def test_it_reads_a_keys_calls_of_a_status_from_their_own_index(api, calls):  # noqa: F811
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {calls['raw']}")

    queries = _checked(api, "/api/realtime/calls", {"status": "ended"})

    (page,) = _page_queries(queries)
    if connection.vendor == "sqlite":
        # In order, and not the key's index walked, checking each call's status: a rare status
        # read that way costs the key's whole history. (PostgreSQL weighs its plan from the
        # statistics of these few rows: indexed, as `_checked` asks, maybe sorted.)
        assert query_plans.sorts([page]) == []
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + page[0], page[1])
            details = " ".join(row[-1] for row in cursor.fetchall())
        assert "call_key_status_recent_idx (api_key_id=? AND status=?)" in details


def test_it_lists_a_status_none_of_the_keys_calls_have_without_reading_calls(api, calls):  # noqa: F811
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {calls['raw']}")

    with query_plans.capture() as queries:
        response = api.get("/api/realtime/calls", {"status": "pending"})

    assert response.status_code == 200
    assert (response.json()["count"], response.json()["data"]) == (0, [])
    # The counters said none: no page read at all.
    assert _page_queries(queries) == []
