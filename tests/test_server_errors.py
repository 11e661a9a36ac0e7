"""An unexpected error in the API reaches Django's 500 path (signal, log) and answers in our shape."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.core.signals import got_request_exception
from rest_framework.test import APIClient

from realtime import selectors


def _broken_stats(**kwargs: Any) -> dict[str, Any]:
    raise RuntimeError("the statistics broke")


@pytest.mark.django_db
def test_it_answers_an_unexpected_error_with_a_json_500_after_django_saw_it(monkeypatch, caplog):
    monkeypatch.setattr(selectors, "stats", _broken_stats)
    seen: list[Any] = []

    def receiver(sender: Any, request: Any, **kwargs: Any) -> None:
        seen.append(request.path)

    got_request_exception.connect(receiver)
    try:
        with caplog.at_level(logging.ERROR, logger="django.request"):
            response = APIClient(raise_request_exception=False, REMOTE_ADDR="127.0.0.1").get("/api/realtime/stats")
    finally:
        got_request_exception.disconnect(receiver)

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "success": False,
        "error": {"code": "server_error", "message": "An unexpected error occurred.", "details": {}},
    }
    assert seen == ["/api/realtime/stats"]
    assert [r.exc_info[1].args for r in caplog.records if r.name == "django.request" and r.exc_info] == [("the statistics broke",)]


@pytest.mark.django_db
def test_it_keeps_django_s_page_for_an_error_outside_the_api(client, monkeypatch):
    from realtime import views

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the page broke")

    monkeypatch.setattr(views, "render", broken)
    client.raise_request_exception = False

    response = client.get("/realtime-api.html", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
