"""The support dashboard in real Chromium, against the real server: French by default, English on
request, no console error, no horizontal scroll at 1366 px, and the live count moving when a call
starts and ends."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from localrealtime.caller import Caller
from realtime import quality, services, upstream
from realtime.exceptions import UpstreamError
from realtime.models import Call, CallEvent
from realtime.sessions import parse_session

pytestmark = [pytest.mark.browser, pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

NO_HORIZONTAL_SCROLL = "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"


async def _wait_until(page: Any, function: str, arg: Any = None, within: float = 15.0) -> None:
    """Poll a JS function until it returns true (wait_for_function needs eval, which our CSP forbids)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await page.evaluate(function, arg):
        if loop.time() > deadline:
            raise TimeoutError(f"still false after {within} s: {function}")
        await asyncio.sleep(0.1)


def _support_agent(password: str) -> None:
    user = User.objects.create(username="sophie", password=password, is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_call"))


def _history() -> None:
    """A few calls of today, through the product's own transitions: answered and ended for various
    reasons, with usage and measured turns, one refused upstream."""
    reasons = [Call.EndReason.API_HANGUP, Call.EndReason.REMOTE_HANGUP, Call.EndReason.REMOTE_HANGUP, Call.EndReason.IDLE_TIMEOUT]
    for n, reason in enumerate(reasons):
        call = services.call_open(offer="v=0", session=parse_session({"voice": "echo"}), source="webrtc", actor="api")
        services.call_answer(call=call, created=upstream.CreatedCall(upstream_id=f"rtc_{n}", sdp_answer="v=0"))
        usage = {"response": {"usage": {"input_tokens": 1200 * (n + 1), "output_tokens": 400 * (n + 1)}}}
        services.call_record_events(call=call, events=[services.UpstreamEvent("response.done", f"e{n}", usage, timezone.now())])
        # Measured turns: the latency chart has a line to draw.
        services.call_record_metrics(call=call, metrics=quality.TurnMeter(latencies_ms=[400.0 + 150 * n, 900.0]).metrics())
        services.call_end(call=call, reason=reason, actor=CallEvent.Actor.SYSTEM)
    failed = services.call_open(offer="v=0", session=parse_session({}), source="sip", actor="api")
    services.call_fail(call=failed, error=UpstreamError("refused"))


def _console_error(message: Any, errors: list[str]) -> None:
    # Chromium's own request for /favicon.ico is not the page's (the admin's branding serves one).
    if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
        errors.append(f"{message.text} {message.location}")


async def _live(page: Any, n: int) -> None:
    await _wait_until(page, "(n) => document.querySelector('#live-active').dataset.value === String(n)", n)


async def test_it_shows_the_dashboard_in_both_languages_with_the_live_count_moving(asgi_server, browser_context):
    # Hashed as the server checks it (the suite's own settings hash with MD5, for speed).
    hasher = PBKDF2PasswordHasher()
    password = hasher.encode("correct horse battery", hasher.salt())
    await sync_to_async(_support_agent)(password)
    await sync_to_async(_history)()
    page = await browser_context.new_page()
    await page.set_viewport_size({"width": 1366, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: _console_error(message, errors))
    page.on("response", lambda response: errors.append(f"{response.status} {response.url}") if response.status >= 400 else None)

    await page.goto(f"{asgi_server.url}/admin/dashboard/")
    # Staff only: the sign-in page first, then back to the dashboard.
    await page.fill('input[name="username"]', "sophie")
    await page.fill('input[name="password"]', "correct horse battery")
    await page.click('button[type="submit"]')
    await page.wait_for_selector("#dashboard")
    assert (await page.locator("#fig-calls").inner_text()).strip() == "5"
    assert await page.locator("#table-reasons tbody tr").count() == 4
    assert await page.locator("html").get_attribute("lang") == "fr"
    assert "Appels en cours" in await page.locator(".dash-live h2").inner_text()
    await page.wait_for_selector('#feed-state[data-state="live"]')
    # Every chart drew (Chart.js replaced the empty canvas), each with its table of numbers.
    for chart in ("hourly", "daily", "reasons", "cost", "durations", "latency"):
        assert await page.evaluate(f"() => !!window.Chart.getChart('chart-{chart}')")
        assert await page.locator(f"#table-{chart}").count() == 1
    # Turn latency: one model, its p50 and p95 lines, its eight turns over the day.
    assert await page.evaluate("() => window.Chart.getChart('chart-latency').data.datasets.length") == 2
    assert (await page.locator("#table-latency-models tbody tr td").last.inner_text()).strip() == "8"
    assert "Latence des tours par modèle" in await page.locator("#h-latency").inner_text()
    assert await page.evaluate(NO_HORIZONTAL_SCROLL)
    await _live(page, 0)

    # A call starts through the API: the count moves without a reload, and back when it ends.
    caller = Caller()
    try:
        async with httpx.AsyncClient(base_url=asgi_server.url, timeout=15) as http:
            created = await http.post("/api/realtime/calls", json={"sdp": await caller.offer(), "session": {"voice": "echo"}})
            assert created.status_code == 201
            await _live(page, 1)
            if target := os.environ.get("DASHBOARD_SCREENSHOT"):
                # docs/screenshots/dashboard.png is made this way: one call live.
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=target, full_page=False)
            assert (await http.delete(f"/api/realtime/calls/{created.json()['call_id']}")).status_code == 200
    finally:
        await caller.close()
    await _live(page, 0)

    # The period selector reloads with the period asked for.
    await page.select_option("#id_period", "7d")
    # Until the new page has loaded, its language selector has no listener yet (dashboard.js is
    # deferred, its table is not): a change made then would go unheard.
    async with page.expect_navigation(wait_until="load"):
        await page.click("#period-form button[type=submit]")
    await page.wait_for_selector("#table-daily tbody tr:nth-child(7)", state="attached")
    assert await page.locator("#table-daily tbody tr").count() == 7

    # English on request: the language switch applies at once and keeps the period.
    await page.select_option("#dash-language", "en")
    await page.wait_for_selector('html[lang="en"]')
    assert "Live calls now" in await page.locator(".dash-live h2").inner_text()
    assert await page.locator("#table-daily tbody tr").count() == 7
    assert "Calls per hour" in await page.locator("#h-hourly").inner_text()
    assert "Turn latency by model" in await page.locator("#h-latency").inner_text()
    assert await page.evaluate(NO_HORIZONTAL_SCROLL)
    await page.wait_for_selector('#feed-state[data-state="live"]')
    assert errors == []
