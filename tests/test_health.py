"""`GET /api/realtime/health`: each component and whether it works, 200 or 503, details only for
callers who may see the deployment. Workers and the sweeper are known alive from the heartbeats
their loops write."""

from __future__ import annotations

import subprocess
import time
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from realtime import health
from realtime.models import Heartbeat

from .test_realtime_worker import _start_worker

URL = "/api/realtime/health"


def _beat_all() -> None:
    health.beat(Heartbeat.Role.MONITORS, "worker-a")
    health.beat(Heartbeat.Role.SWEEPER, "worker-a")


@pytest.mark.django_db
def test_it_reports_every_component_working(api, settings, asgi_server):
    settings.REALTIME_MONITORS = "worker"
    _beat_all()

    response = api.get(URL)

    assert response.status_code == 200
    body = response.json()
    beat_at = Heartbeat.objects.get(role=Heartbeat.Role.MONITORS).beat_at.isoformat()
    last_pass = Heartbeat.objects.get(role=Heartbeat.Role.SWEEPER).beat_at.isoformat()
    assert body == {
        "success": True,
        "status": "ok",
        "components": {
            "database": {"ok": True, "vendor": connection.vendor, "migrations_applied": True},
            "channel_layer": {"ok": True, "backend": "in-memory"},
            "workers": {"ok": True, "alive": 1, "last_heartbeat": beat_at},
            "sweeper": {"ok": True, "last_pass": last_pass},
            "upstream": {"ok": True, "base_url": asgi_server.engine_url},
        },
    }
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_it_is_degraded_when_no_worker_beat_within_a_lease(api, settings, asgi_server):
    settings.REALTIME_MONITORS = "worker"
    _beat_all()
    stale = timezone.now() - timedelta(seconds=settings.REALTIME_MONITOR_LEASE_SECONDS + 1)
    Heartbeat.objects.filter(role=Heartbeat.Role.MONITORS).update(beat_at=stale)

    response = api.get(URL)

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["components"]["workers"] == {"ok": False, "alive": 0, "last_heartbeat": stale.isoformat()}
    assert body["components"]["sweeper"]["ok"] is True


@pytest.mark.django_db
def test_it_is_degraded_when_upstream_cannot_be_reached(api, settings):
    settings.REALTIME_MONITORS = "off"
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # discard port: nothing listens

    response = api.get(URL)

    assert response.status_code == 503
    assert response.json()["components"]["upstream"] == {"ok": False, "base_url": "http://127.0.0.1:9/v1"}
    assert response.json()["components"]["workers"]["ok"] is True  # monitoring off: nothing expected


@pytest.mark.django_db
def test_it_tells_anonymous_callers_only_the_status_outside_local_mode(api, settings, asgi_server):
    settings.REALTIME_LOCAL_MODE = False
    settings.REALTIME_MONITORS = "worker"

    response = api.get(URL)

    assert response.status_code == 503
    assert response.json() == {"success": True, "status": "degraded"}


@pytest.mark.django_db
def test_it_shows_an_api_key_every_component(api, settings, asgi_server, make_key):
    settings.REALTIME_LOCAL_MODE = False
    settings.REALTIME_MONITORS = "worker"
    _beat_all()
    _, raw = make_key()

    response = api.get(URL, HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert response.status_code == 200
    assert set(response.json()["components"]) == {"database", "channel_layer", "workers", "sweeper", "upstream"}


@pytest.mark.django_db
def test_it_keeps_one_row_per_process_and_role():
    health.beat(Heartbeat.Role.MONITORS, "worker-a")
    first = Heartbeat.objects.get().beat_at
    health.beat(Heartbeat.Role.MONITORS, "worker-a")
    health.beat(Heartbeat.Role.SWEEPER, "worker-a")

    assert Heartbeat.objects.count() == 2
    assert Heartbeat.objects.get(role=Heartbeat.Role.MONITORS).beat_at > first


@pytest.mark.django_db
def test_it_forgets_beats_older_than_a_day():
    health.beat(Heartbeat.Role.MONITORS, "gone")
    health.beat(Heartbeat.Role.MONITORS, "here")
    Heartbeat.objects.filter(owner="gone").update(beat_at=timezone.now() - timedelta(days=2))

    assert health.forget_old_beats(now=timezone.now()) == 1
    assert list(Heartbeat.objects.values_list("owner", flat=True)) == ["here"]


@pytest.mark.django_db
def test_its_queries_use_the_heartbeat_index():
    since = timezone.now()
    queries = [
        Heartbeat.objects.filter(role=Heartbeat.Role.MONITORS, beat_at__gte=since),
        Heartbeat.objects.filter(role=Heartbeat.Role.SWEEPER).order_by("-beat_at"),
        Heartbeat.objects.filter(role__in=Heartbeat.Role.values, beat_at__lt=since),
    ]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # An empty table is cheaper to scan; ask what the planner does once it is not.
            cursor.execute("SET enable_seqscan = off")
        plans = [query.explain() for query in queries]
        if connection.vendor == "postgresql":
            cursor.execute("RESET enable_seqscan")
    for plan in plans:
        assert "heartbeat_role_beat" in plan


@pytest.mark.django_db(transaction=True)
def test_it_sees_a_real_worker_alive_from_its_heartbeats(asgi_server, tmp_path):
    worker = _start_worker(asgi_server, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 30
        while not (
            Heartbeat.objects.filter(role=Heartbeat.Role.MONITORS).exists()
            and Heartbeat.objects.filter(role=Heartbeat.Role.SWEEPER).exists()
        ):
            assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.1)
        # Through the real server, as a probe would ask.
        body = httpx.get(f"{asgi_server.url}{URL}", timeout=10).json()
        assert body["components"]["workers"]["alive"] == 1
        assert body["components"]["sweeper"]["ok"] is True
        owner = Heartbeat.objects.get(role=Heartbeat.Role.MONITORS).owner
        assert f":{worker.pid}:" in owner
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
