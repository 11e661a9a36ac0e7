"""The demo page in real Chromium, against the real server and the embedded engine."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async

from localrealtime.caller import Caller
from realtime import services, sessions
from realtime.models import Call, CallEvent
from tests.conftest import start_server, stop_server

pytestmark = [pytest.mark.browser, pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

INBOUND_AUDIO_BYTES = """() => window.realtimeDemo.pc.getStats().then((report) => {
  let bytes = 0;
  report.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "audio") bytes += s.bytesReceived; });
  return bytes;
})"""


async def _text(page: Any, selector: str) -> str:
    return (await page.locator(selector).text_content() or "").strip()


async def _wait_until(page: Any, function: str, arg: Any = None, within: float = 15.0) -> None:
    """Poll a JS function until it returns true. (wait_for_function compiles its predicate with
    eval, which the page's content security policy rightly forbids.)"""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await page.evaluate(function, arg):
        if loop.time() > deadline:
            raise TimeoutError(f"still false after {within} s: {function}")
        await asyncio.sleep(0.1)


async def _wait_text(page: Any, selector: str, expected: str) -> None:
    await _wait_until(
        page, "([selector, expected]) => document.querySelector(selector)?.textContent.trim() === expected", [selector, expected]
    )


@sync_to_async
def _call_in_db(call_id: str) -> tuple[str, list[tuple[str, str]]]:
    call = Call.objects.get(call_id=call_id)
    return call.status, list(CallEvent.objects.filter(call=call, event_type="call.ended").values_list("event_type", "actor"))


async def test_it_makes_a_call_from_the_page_and_shows_every_call_live(asgi_server, browser_context):
    page = await browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{asgi_server.url}/realtime-api.html")
    await page.wait_for_selector('#feed-state[data-state="live"]')
    assert await page.locator("html").get_attribute("lang") == "fr"

    # Start a call from the form.
    await page.select_option("#f-voice", "echo")
    await page.fill("#f-instructions", "Réponds en français.")
    await page.click("#start-call")
    await page.wait_for_selector('#c-connection[data-state="connected"]')
    call_id = await _text(page, "#c-call-id")
    assert call_id.startswith("call_")

    # Audio comes back: the engine's track (silence, and a spoken echo of each turn), so inbound RTP bytes keep growing.
    await _wait_until(page, f"() => ({INBOUND_AUDIO_BYTES})().then((bytes) => bytes > 0)")
    first = await page.evaluate(INBOUND_AUDIO_BYTES)
    await _wait_until(page, f"() => ({INBOUND_AUDIO_BYTES})().then((bytes) => bytes > {first})")
    # The page shows it too.
    await _wait_until(page, "() => Number(document.querySelector('#c-bytes').dataset.bytes) > 0")

    # Events arrive: the recorded ones (REST + call socket) and the engine's data-channel events.
    await page.wait_for_selector('#events-list li[data-source="server"][data-event-type="call.answered"]')
    await page.wait_for_selector('#events-list li[data-source="channel"][data-event-type="session.created"]')
    await page.wait_for_selector(f'#calls-body tr[data-call-id="{call_id}"][data-status="active"]')
    await _wait_text(page, "#s-active_calls", "1")
    total_before = int(await _text(page, "#s-total_calls"))

    # A second call, created and ended by someone else through the REST API, shows up without reload.
    caller = Caller()
    try:
        async with httpx.AsyncClient(base_url=asgi_server.url, timeout=15) as http:
            created = await http.post("/api/realtime/calls", json={"sdp": await caller.offer(), "session": {"voice": "shimmer"}})
            assert created.status_code == 201
            other_id = created.json()["call_id"]
            await page.wait_for_selector(f'#calls-body tr[data-call-id="{other_id}"][data-status="active"]')
            await _wait_text(page, "#s-total_calls", str(total_before + 1))
            await _wait_text(page, "#s-active_calls", "2")
            assert (await http.delete(f"/api/realtime/calls/{other_id}")).status_code == 200
    finally:
        await caller.close()
    await page.wait_for_selector(f'#calls-body tr[data-call-id="{other_id}"][data-status="ended"]')
    await _wait_text(page, "#s-ended_calls", "1")
    await _wait_text(page, "#s-active_calls", "1")
    # Our own call was not touched by the other one ending.
    assert await page.locator("#c-connection").get_attribute("data-state") == "connected"

    # End the call from the page.
    await page.click("#end-call")
    await page.wait_for_selector('#c-connection[data-state="closed"]')
    await page.wait_for_selector(f'#calls-body tr[data-call-id="{call_id}"][data-status="ended"]')
    await page.wait_for_selector('#events-list li[data-source="server"][data-event-type="call.ended"]')
    await _wait_text(page, "#s-ended_calls", "2")
    assert await page.locator("#call-error").is_hidden()

    # The status filter asks the API again: no call is active any more.
    await page.select_option("#status-filter", "active")
    await page.wait_for_selector("#calls-empty:not([hidden])")
    await page.select_option("#status-filter", "ended")
    await page.wait_for_selector(f'#calls-body tr[data-call-id="{call_id}"]')
    assert set(await page.locator("#calls-body tr").evaluate_all("rows => rows.map((r) => r.dataset.status)")) == {"ended"}

    status, ended_events = await _call_in_db(call_id)
    assert status == "ended"
    # It should have recorded exactly one end, by the API the page called.
    assert ended_events == [("call.ended", "api")]
    assert errors == []


async def test_it_shows_an_upstream_refusal_next_to_the_form(asgi_server, browser_context):
    page = await browser_context.new_page()
    await page.goto(f"{asgi_server.url}/realtime-api.html")
    await page.wait_for_selector('#feed-state[data-state="live"]')
    # The engine refuses the next offer, as OpenAI would refuse an offer it cannot use.
    asgi_server.engine("POST", "faults", json={"op": "create", "status": 400})

    await page.click("#start-call")

    await page.wait_for_selector("#call-error:not([hidden])")
    assert await page.locator("#call-error").get_attribute("data-error") == "upstream"
    # The API's message (which quotes the upstream's own words) is shown where the call was started.
    assert "Scripted fault (400)." in await _text(page, "#call-error")
    assert await page.locator("#c-connection").get_attribute("data-state") == "failed"
    assert await page.locator("#start-call").is_enabled()
    status = await sync_to_async(lambda: list(Call.objects.values_list("status", flat=True)))()
    assert status == ["failed"]
    # The failed call is listed live too.
    await page.wait_for_selector('#calls-body tr[data-status="failed"]')


async def test_it_shows_a_refused_microphone_next_to_the_form(asgi_server, browser_context_without_microphone):
    page = await browser_context_without_microphone.new_page()
    await page.goto(f"{asgi_server.url}/realtime-api.html")
    await page.wait_for_selector('#feed-state[data-state="live"]')

    await page.click("#start-call")

    await page.wait_for_selector("#call-error:not([hidden])")
    assert await page.locator("#call-error").get_attribute("data-error") == "microphone"
    assert await page.locator("#c-connection").get_attribute("data-state") == "idle"
    # Nothing was sent: no call recorded.
    assert await sync_to_async(Call.objects.count)() == 0


async def test_it_reconnects_and_catches_up_after_the_server_restarts(browser_context, tmp_path, sdp_offer):
    server = start_server(tmp_path)
    try:
        page = await browser_context.new_page()
        await page.goto(f"{server.url}/realtime-api.html")
        await page.wait_for_selector('#feed-state[data-state="live"]')
        await _wait_text(page, "#s-total_calls", "0")

        stop_server(server)
        await page.wait_for_selector('#feed-state[data-state="reconnecting"]')
        # A call recorded while the page was cut off: its push reached nobody.
        call = await sync_to_async(services.call_open)(
            offer=sdp_offer, session=sessions.parse_session({}), source=Call.Source.WEBRTC, actor=CallEvent.Actor.API
        )
        server = start_server(tmp_path, like=server)

        # It should reconnect by itself and re-fetch, so the missed call and the stats appear.
        await page.wait_for_selector('#feed-state[data-state="live"]', timeout=30_000)
        await page.wait_for_selector(f'#calls-body tr[data-call-id="{call.call_id}"][data-status="pending"]')
        await _wait_text(page, "#s-total_calls", "1")
    finally:
        stop_server(server)
