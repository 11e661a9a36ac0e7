"""The scaled topology, for real (`make run-scaled`'s Procfile under honcho): nginx in front of two
web processes (uvicorn), two realtime_workers, PostgreSQL, Redis and the local engine as its own
process. Needs the Debian packages postgresql, redis-server and nginx (`.ci/run` installs them).

Calls created through nginx land on both web processes; a feed on one process hears of calls
changed on the other (through Redis); each call is monitored exactly once; kill -9 of a web
process and a worker during a burst loses nothing and leaves no call live; past capacity the
answers are 429/503 with Retry-After in our error shape, never 500.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from deploy import scaled, servers

pytestmark = [pytest.mark.topology, pytest.mark.timeout(600)]

# Short limits, so take-overs happen within the test: a worker's calls within a 2 s lease, a
# create that died with its web process ended (setup_timeout) within 5 s and a sweep.
SETTINGS = {
    "REALTIME_MONITOR_LEASE_SECONDS": "2",
    "REALTIME_MONITOR_FLUSH_MS": "50",
    "REALTIME_SETUP_TIMEOUT_SECONDS": "5",
    "REALTIME_SWEEP_INTERVAL_SECONDS": "1",
    "REALTIME_MAX_ACTIVE_CALLS": "40",
    "REALTIME_THROTTLE_ANONYMOUS": "",
    "LOCALREALTIME_CONNECT_TIMEOUT": "120",
}
# The documented take-over time (docs/deployment.md): a lease, a setup timeout and a sweep, with room.
TAKE_OVER_SECONDS = 30


@pytest.fixture(scope="module")
def topology() -> Iterator[scaled.Topology]:
    var = Path(tempfile.mkdtemp(prefix="iaposte-topology-"))
    servers._give_to_server_user(var)
    # Two workers, so "exactly once" is decided between them; web1 and the second worker each
    # under a honcho of their own, so that killing them leaves the rest running.
    groups = {"core": ["postgres", "redis", "engine", "nginx", "web2", "worker"], "web1": ["web1"], "worker-b": ["worker"]}
    topology = scaled.start(var, extra=SETTINGS, groups=groups)
    yield topology
    topology.stop()


def _create(client: httpx.Client, url: str, offer: str) -> httpx.Response:
    return client.post(f"{url}/api/realtime/calls", json={"sdp": offer})


def _events(url: str, call_id: str, event_type: str) -> int:
    response = httpx.get(f"{url}/api/realtime/calls/{call_id}/events", params={"event_type": event_type}, timeout=10)
    return int(response.json()["count"])


def _wait(predicate: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.25)
    return result


def _live(url: str) -> list[str]:
    ids = []
    for status in ("pending", "active"):
        response = httpx.get(f"{url}/api/realtime/calls", params={"status": status, "limit": 100}, timeout=10)
        ids += [call["call_id"] for call in response.json()["data"]]
    return ids


def _end_all(url: str, call_ids: list[str]) -> None:
    with httpx.Client(timeout=30) as client:
        for call_id in call_ids:
            assert client.delete(f"{url}/api/realtime/calls/{call_id}").status_code in (200, 409)


def _upstreams(topology: scaled.Topology, since: int) -> Counter[str]:
    """Which web process answered each POST through nginx, from its access log (after `since` bytes)."""
    log = (topology.var / "nginx" / "access.log").read_bytes()[since:].decode()
    return Counter(re.findall(r'"POST /api/realtime/calls HTTP/1.1" 201 \d+ upstream=(\S+)', log))


def _log_size(topology: scaled.Topology) -> int:
    return (topology.var / "nginx" / "access.log").stat().st_size


def test_it_is_healthy_with_every_component_real(topology):
    def both_workers() -> Any:
        body = httpx.get(f"{topology.url}/api/realtime/health", timeout=10).json()
        return body if body["components"]["workers"]["alive"] == 2 else None

    # Healthy as soon as one worker beats; the second may still be starting.
    body = _wait(both_workers, 30, "both workers beating")

    components = body["components"]
    assert body["status"] == "ok"
    assert components["database"]["vendor"] == "postgresql"
    assert components["channel_layer"]["backend"] == "redis"
    assert components["upstream"]["base_url"] == f"http://127.0.0.1:{topology.ports.engine}/v1"


def test_it_spreads_calls_created_through_nginx_over_both_web_processes(topology, sdp_offer):
    since = _log_size(topology)
    with httpx.Client(timeout=30) as client:
        created = [_create(client, topology.url, sdp_offer) for _ in range(8)]
    try:
        assert [r.status_code for r in created] == [201] * 8
        # nginx writes a request's log line after its response: the last may come a moment later.
        answered = _wait(lambda: (found := _upstreams(topology, since)).total() >= 8 and found, 5, "eight log lines")
        assert set(answered) == {f"127.0.0.1:{port}" for port in topology.ports.web}
        assert sum(answered.values()) == 8
    finally:
        _end_all(topology.url, [r.json()["call_id"] for r in created if r.status_code == 201])


def test_a_feed_on_one_web_process_hears_of_calls_changed_on_the_other(topology, sdp_offer):
    web1, web2 = topology.web_url(0), topology.web_url(1)

    async def scenario() -> list[tuple[str, str]]:
        feed_url = web1.replace("http://", "ws://") + "/ws/realtime/calls"
        async with websockets.connect(feed_url, origin=web1, open_timeout=10) as feed, httpx.AsyncClient(timeout=30) as http:
            created = await http.post(f"{web2}/api/realtime/calls", json={"sdp": sdp_offer})
            call_id = created.json()["call_id"]
            assert (await http.delete(f"{web2}/api/realtime/calls/{call_id}")).status_code == 200
            seen = []
            while len(seen) < 3:
                message = json.loads(await asyncio.wait_for(feed.recv(), timeout=10))
                if message["type"] == "call.changed" and message["call"]["call_id"] == call_id:
                    seen.append((message["event"]["event_type"], message["call"]["status"]))
            return seen

    assert asyncio.run(scenario()) == [("call.created", "pending"), ("call.answered", "active"), ("call.ended", "ended")]


def test_each_call_is_monitored_exactly_once_by_the_workers(topology, sdp_offer):
    with httpx.Client(timeout=30) as client:
        call_ids = [_create(client, topology.url, sdp_offer).json()["call_id"] for _ in range(6)]
    try:
        # Each call's sideband is joined once (one session.created), by one of the two workers.
        for call_id in call_ids:
            _wait(lambda c=call_id: _events(topology.url, c, "session.created") >= 1, 30, f"{call_id} monitored")
        time.sleep(3)  # more than a lease: a second monitor would have joined by now
        assert [_events(topology.url, c, "session.created") for c in call_ids] == [1] * 6
    finally:
        _end_all(topology.url, call_ids)


def test_overload_answers_429_or_503_with_retry_after_never_500(topology, sdp_offer):
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=80)) as http:
            return list(
                await asyncio.gather(*(http.post(f"{topology.url}/api/realtime/calls", json={"sdp": sdp_offer}) for _ in range(80)))
            )

    responses = asyncio.run(burst())
    try:
        statuses = Counter(r.status_code for r in responses)
        assert set(statuses) <= {201, 429, 503} and statuses[201] == 40, statuses
        for refused in (r for r in responses if r.status_code != 201):
            body = refused.json()
            assert body["success"] is False and set(body["error"]) == {"code", "message", "details"}
            assert int(refused.headers["Retry-After"]) >= 1
        # Never half-written: the refused creates left no call behind.
        assert len(_live(topology.url)) == 40
    finally:
        _end_all(topology.url, [r.json()["call_id"] for r in responses if r.status_code == 201])


def test_kill_9_of_a_web_process_and_a_worker_during_a_burst_loses_nothing(topology, sdp_offer):
    """Last in this module: the topology is left with one web process and one worker."""
    results: list[httpx.Response | Exception] = []

    async def burst() -> None:
        async with httpx.AsyncClient(timeout=60) as http:

            async def one(i: int) -> None:
                await asyncio.sleep(i * 0.1)  # 30 creates over 3 s
                try:
                    results.append(await http.post(f"{topology.url}/api/realtime/calls", json={"sdp": sdp_offer}))
                except httpx.HTTPError as exc:
                    results.append(exc)

            async def killer() -> None:
                await asyncio.sleep(1.0)
                topology.kill("web1", "web1")
                topology.kill("worker-b", "worker")

            await asyncio.gather(killer(), *(one(i) for i in range(30)))

    asyncio.run(burst())
    killed_at = time.monotonic()

    # Every create got an answer in our shape: 201, or 503 (nginx: the web process died under it).
    statuses = Counter(r.status_code if isinstance(r, httpx.Response) else type(r).__name__ for r in results)
    assert set(statuses) <= {201, 503} and statuses[201] >= 20, statuses
    created = [r.json()["call_id"] for r in results if isinstance(r, httpx.Response) and r.status_code == 201]
    # Nothing lost: each created call is recorded, and monitored once more by the surviving worker
    # if the killed one held it (a take-over joins the sideband again).
    for call_id in created:
        assert httpx.get(f"{topology.url}/api/realtime/calls/{call_id}", timeout=10).json()["call"]["status"] in ("pending", "active")
        _wait(lambda c=call_id: _events(topology.url, c, "session.created") >= 1, TAKE_OVER_SECONDS, f"{call_id} monitored")

    _end_all(topology.url, created)
    # No call left live: creates that died with web1 (pending) are ended by the sweeper.
    _wait(lambda: not _live(topology.url), TAKE_OVER_SECONDS, "no call live")
    assert time.monotonic() - killed_at < TAKE_OVER_SECONDS + 30
    health = httpx.get(f"{topology.url}/api/realtime/health", timeout=10).json()
    assert health["components"]["workers"]["alive"] >= 1
