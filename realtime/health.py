"""`GET /api/realtime/health`: is each part of the service working?

    {"success": true, "status": "ok" | "degraded",
     "components": {"database": {"ok", "vendor", "migrations_applied"},
                    "channel_layer": {"ok", "backend"},
                    "workers": {"ok", "alive", "last_heartbeat"},
                    "sweeper": {"ok", "last_pass"},
                    "upstream": {"ok", "base_url"}}}

200 when every component is ok, 503 otherwise (so nginx, systemd and load balancers can use the
status alone). Anonymous callers outside local mode get only `success` and `status`: the rest
describes the deployment. Workers and the sweeper are known alive from their heartbeats (rows
the background loops overwrite; see `beat`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import openapi
from .auth.principals import Principal
from .models import Heartbeat

logger = logging.getLogger(__name__)

# Old processes' rows are forgotten after this long (by the sweeper), so the table stays small.
HEARTBEAT_KEEP = timedelta(days=1)
# The upstream probe is remembered this long: probes every few seconds must not each reach OpenAI.
UPSTREAM_PROBE_SECONDS = 15.0

PROCESS = f"{socket.gethostname()}:{os.getpid()}"


def beat(role: str, owner: str = PROCESS) -> None:
    """Say that this process's `role` loop is alive: one upsert on (role, owner)."""
    Heartbeat.objects.bulk_create(
        [Heartbeat(role=role, owner=owner[:100], beat_at=timezone.now())],
        update_conflicts=True,
        unique_fields=["role", "owner"],
        update_fields=["beat_at"],
    )


def forget_old_beats(*, now: datetime) -> int:
    deleted, _ = Heartbeat.objects.filter(role__in=Heartbeat.Role.values, beat_at__lt=now - HEARTBEAT_KEEP).delete()
    return deleted


def _last_beat(role: str) -> datetime | None:
    return Heartbeat.objects.filter(role=role).order_by("-beat_at").values_list("beat_at", flat=True).first()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


_migrations_applied = False


def database() -> dict[str, Any]:
    global _migrations_applied
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        if not _migrations_applied:
            # Migrations are never unapplied under a running server: once true, remembered.
            executor = MigrationExecutor(connection)
            _migrations_applied = not executor.migration_plan(executor.loader.graph.leaf_nodes())
        return {"ok": _migrations_applied, "vendor": connection.vendor, "migrations_applied": _migrations_applied}
    except DatabaseError:
        logger.warning("Health: the database does not answer", exc_info=True)
        return {"ok": False, "vendor": connection.vendor, "migrations_applied": None}


def channel_layer() -> dict[str, Any]:
    layer = get_channel_layer()
    # channels_redis' layers, or ours built on them (realtime.layers).
    backend = "redis" if any(cls.__module__.startswith("channels_redis") for cls in type(layer).__mro__) else "in-memory"

    async def round_trip() -> bool:
        # A message through the layer and back: Redis answering PING would not prove the layer works.
        channel = await layer.new_channel("health.")
        token = uuid.uuid4().hex
        await layer.send(channel, {"type": "health.check", "token": token})
        message = await layer.receive(channel)
        return bool(message.get("token") == token)

    async def within_two_seconds() -> bool:
        return await asyncio.wait_for(round_trip(), 2.0)

    try:
        ok = async_to_sync(within_two_seconds)()
    except Exception:
        logger.warning("Health: the channel layer does not answer", exc_info=True)
        ok = False
    return {"ok": ok, "backend": backend}


def workers(*, now: datetime) -> dict[str, Any]:
    """Processes running call monitors (workers, or the web process itself when embedded)."""
    # A supervisor beats every third of a lease: one silent for a whole lease has stopped.
    since = now - timedelta(seconds=settings.REALTIME_MONITOR_LEASE_SECONDS)
    alive = Heartbeat.objects.filter(role=Heartbeat.Role.MONITORS, beat_at__gte=since).count()
    last = _last_beat(Heartbeat.Role.MONITORS)
    # With monitoring off nothing is expected to run; otherwise at least one must.
    ok = alive > 0 or settings.REALTIME_MONITORS == "off"
    return {"ok": ok, "alive": alive, "last_heartbeat": _iso(last)}


def sweeper(*, now: datetime) -> dict[str, Any]:
    last = _last_beat(Heartbeat.Role.SWEEPER)
    # Three missed passes (and never less than the monitors' lease) mean no sweeper runs.
    late = max(3 * settings.REALTIME_SWEEP_INTERVAL_SECONDS, settings.REALTIME_MONITOR_LEASE_SECONDS)
    ok = settings.REALTIME_MONITORS == "off" or (last is not None and last >= now - timedelta(seconds=late))
    return {"ok": ok, "last_pass": _iso(last)}


_upstream_probe: tuple[float, str, bool] | None = None


def upstream() -> dict[str, Any]:
    """OpenAI (or the local engine) reachable: any HTTP answer to GET {base}/models counts."""
    global _upstream_probe
    base = settings.OPENAI_BASE_URL.rstrip("/")
    now = time.monotonic()
    if _upstream_probe is None or _upstream_probe[1] != base or now - _upstream_probe[0] > UPSTREAM_PROBE_SECONDS:
        try:
            # Only reachability: the key is not sent, so a 401 is as good an answer as a 200.
            ok = httpx.get(f"{base}/models", timeout=3.0).status_code < 500
        except httpx.HTTPError:
            ok = False
        _upstream_probe = (now, base, ok)
    return {"ok": _upstream_probe[2], "base_url": base}


def report() -> dict[str, Any]:
    now = timezone.now()
    components = {"database": database(), "channel_layer": channel_layer()}
    if components["database"]["ok"]:
        components["workers"] = workers(now=now)
        components["sweeper"] = sweeper(now=now)
    else:
        components["workers"] = {"ok": False, "alive": None, "last_heartbeat": None}
        components["sweeper"] = {"ok": False, "last_pass": None}
    components["upstream"] = upstream()
    status = "ok" if all(part["ok"] for part in components.values()) else "degraded"
    return {"success": True, "status": status, "components": components}


class HealthView(APIView):
    """Open to all (probes carry no credentials); only the overall status for anonymous callers."""

    permission_classes = [AllowAny]
    # Probes come often and from the proxy's address; their cost is bounded by the cached probe.
    throttle_classes: list[type] = []

    @openapi.health
    def get(self, request: Request) -> Response:
        body = report()
        code = 200 if body["status"] == "ok" else 503
        if not isinstance(request.auth, Principal):
            body = {"success": True, "status": body["status"]}
        return Response(body, status=code, headers={"Cache-Control": "no-store"})
