"""Limit/offset paging for the API's lists, in the seed's shape: `{"success", "data", "count"}`.

DRF's `LimitOffsetPagination`, except that a bad `limit` or `offset` is refused with a 400 naming
the parameter (DRF would silently fall back to the default), and the largest page is a setting
read per request (asking for more gets the largest page, not an error).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response

# Beyond any table we will hold, and far below the database's 64-bit integers (10**21 overflowed them: a 500).
MAX_OFFSET = 10**12


class _Window(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_OFFSET, required=False)
    offset = serializers.IntegerField(min_value=0, max_value=MAX_OFFSET, required=False, default=0)


class SeedPagination(LimitOffsetPagination):
    max_limit_setting = ""
    _window: tuple[int, int] | None = None

    def window(self, request: Request) -> tuple[int, int]:
        """(limit, offset) of the request, validated once: call it before looking anything up, so a
        bad parameter is reported before a missing object."""
        if self._window is None:
            window = _Window(data=request.query_params)
            window.is_valid(raise_exception=True)
            limit = window.validated_data.get("limit", self.default_limit)
            self._window = min(limit, getattr(settings, self.max_limit_setting)), window.validated_data["offset"]
        return self._window

    def get_limit(self, request: Request) -> int:
        return self.window(request)[0]

    def get_offset(self, request: Request) -> int:
        return self.window(request)[1]

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"success": True, "data": data, "count": self.count})


class CallPagination(SeedPagination):
    default_limit = 20
    max_limit_setting = "REALTIME_LIST_MAX_LIMIT"

    def paginate_counted(self, queryset: QuerySet[Any], request: Request, *, count: int) -> list[Any]:
        """A page of `queryset` whose total is already known (from the statistics counters):
        `paginate_queryset` would count the whole history."""
        limit, offset = self.window(request)
        self.request, self.limit, self.offset, self.count = request, limit, offset, count
        return list(queryset[offset : offset + limit])


class EventPagination(SeedPagination):
    default_limit = 100
    max_limit_setting = "REALTIME_EVENTS_MAX_LIMIT"
