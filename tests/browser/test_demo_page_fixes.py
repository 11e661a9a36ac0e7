"""The demo page's finishing touches in real Chromium, in French and in English, against the real
server and the embedded engine: the end of a call stops everything, call ids copy in full, an
empty filter says so, a language switch keeps the form, SIP callers are named, times are the
viewer's own and say so, nothing scrolls sideways at 1366 px, and no console error.

`DEMO_SCREENSHOTS=docs/screenshots` saves the README's screenshots of the page while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async

from realtime import services, sessions
from realtime.models import Call

from .conftest import CHROMIUM_ARGS, _launch
from .test_demo_call import _text, _wait_text, _wait_until

pytestmark = [pytest.mark.browser, pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

LANGUAGES = {
    "fr": {
        "locale": "fr-FR",
        "closed": "fermé",
        "no_match": "Aucun appel ne correspond à ce filtre.",
        "copied": "Copié",
        "by_source": ["Téléphone (SIP): 1", "WebRTC: 1"],
    },
    "en": {
        "locale": "en-US",
        "closed": "closed",
        "no_match": "No calls match this filter.",
        "copied": "Copied",
        "by_source": ["Phone (SIP): 1", "WebRTC: 1"],
    },
}
NO_SIDEWAYS_SCROLL = """() => {
  const boxes = [document.scrollingElement, ...document.querySelectorAll("pre, .table-wrap, .events, .card")];
  return boxes.filter((box) => box.offsetParent !== null || box === document.scrollingElement)
    .filter((box) => box.scrollWidth > box.clientWidth + 1)
    .map((box) => `${box.id || box.className || box.tagName}: ${box.scrollWidth} > ${box.clientWidth}`);
}"""


@contextlib.asynccontextmanager
async def _chromium(tmp_path: Path, **options: Any) -> AsyncIterator[Any]:
    launched = _launch(tmp_path, CHROMIUM_ARGS, **options)
    context = await launched.__anext__()
    try:
        yield context
    finally:
        await launched.aclose()


async def _open(context: Any, url: str) -> tuple[Any, list[str]]:
    """The demo page, live, with every console error and uncaught exception collected."""
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{url}/realtime-api.html")
    await page.wait_for_selector('#feed-state[data-state="live"]')
    return page, errors


def _phone_call(caller: str) -> Call:
    decision = services.SipDecision(accept=True, session=sessions.parse_session({}))
    call = services.sip_call_receive(
        webhook_id=f"wh_{caller}", upstream_id=f"rtc_{caller[1:]}", caller=caller, called="+33180000002", headers=[], decision=decision
    )
    assert call is not None
    return call


@pytest.mark.parametrize("language", ["fr", "en"])
async def test_it_stops_the_connection_and_the_player_after_end_and_copies_the_full_call_id(asgi_server, tmp_path, language):
    words = LANGUAGES[language]
    async with _chromium(tmp_path, locale=words["locale"], permissions=["clipboard-read", "clipboard-write"]) as context:
        page, errors = await _open(context, asgi_server.url)
        assert await page.locator("html").get_attribute("lang") == language
        await page.click("#start-call")
        await page.wait_for_selector('#c-connection[data-state="connected"]')
        call_id = await _text(page, "#c-call-id")
        await _wait_until(page, "() => Number(document.querySelector('#c-bytes').dataset.bytes) > 0")
        assert await page.evaluate("() => document.querySelector('#remote-audio').srcObject !== null")

        # The copy buttons copy the whole id, though the list shows it shortened.
        await page.click("#c-call-copy")
        await _wait_text(page, "#c-call-copy", words["copied"])
        assert await page.evaluate("() => navigator.clipboard.readText()") == call_id
        row = page.locator(f'#calls-body tr[data-call-id="{call_id}"]')
        await row.wait_for()
        assert (await row.locator("td.call-id code").text_content() or "").endswith("…")
        await page.evaluate("() => navigator.clipboard.writeText('')")
        await row.locator("button.copy").click()
        await _wait_until(page, "(id) => navigator.clipboard.readText().then((text) => text === id)", call_id)

        await page.click("#end-call")

        await page.wait_for_selector('#c-connection[data-state="closed"]')
        assert await _text(page, "#c-connection") == words["closed"]
        assert await _text(page, "#c-ice") == words["closed"]
        assert await _text(page, "#c-channel") == "—"
        # The player is stopped and let go of the stream, and the byte count no longer moves.
        assert await page.evaluate("() => { const a = document.querySelector('#remote-audio'); return a.paused && a.srcObject === null; }")
        bytes_at_end = await page.locator("#c-bytes").get_attribute("data-bytes")
        await page.wait_for_timeout(1200)
        assert await page.locator("#c-bytes").get_attribute("data-bytes") == bytes_at_end
        await page.wait_for_selector(f'#calls-body tr[data-call-id="{call_id}"][data-status="ended"]')
        assert errors == []


@pytest.mark.parametrize("language", ["fr", "en"])
async def test_it_says_when_no_call_matches_the_filter(asgi_server, tmp_path, language):
    await sync_to_async(_phone_call)("+33612345678")
    async with _chromium(tmp_path, locale=LANGUAGES[language]["locale"]) as context:
        page, errors = await _open(context, asgi_server.url)
        await page.wait_for_selector("#calls-body tr")

        await page.select_option("#status-filter", "failed")

        await page.wait_for_selector("#calls-empty:not([hidden])")
        assert await _text(page, "#calls-empty") == LANGUAGES[language]["no_match"]
        assert await page.locator("#calls-body tr").count() == 0
        assert errors == []


async def test_it_keeps_the_form_when_switching_language(asgi_server, tmp_path):
    async with _chromium(tmp_path) as context:
        page, errors = await _open(context, asgi_server.url)
        assert await page.locator("html").get_attribute("lang") == "fr"
        await page.select_option("#f-model", "gpt-4o-realtime-preview")
        await page.select_option("#f-voice", "shimmer")
        await page.select_option("#f-modalities", "text")
        await page.fill("#f-max-tokens", "300")
        await page.locator("#f-temperature").fill("1.1")
        await page.fill("#f-instructions", "Parle lentement.")
        await page.uncheck("#f-transcribe")
        await page.select_option("#status-filter", "ended")

        await page.select_option("#language", "en")

        await page.wait_for_selector('html[lang="en"]')
        await page.wait_for_selector('#feed-state[data-state="live"]')
        values = await page.evaluate(
            "() => ['f-model', 'f-voice', 'f-modalities', 'f-max-tokens', 'f-temperature', 'f-instructions', 'status-filter']"
            ".map((id) => document.getElementById(id).value)"
        )
        assert values == ["gpt-4o-realtime-preview", "shimmer", "text", "300", "1.1", "Parle lentement.", "ended"]
        # What depends on the form follows it: the model actually sent, and the example code.
        assert await _text(page, "#f-model-served code") == "gpt-realtime-2.1"
        assert '"instructions": "Parle lentement."' in await _text(page, "#code-js")
        assert await _text(page, "#f-temperature-value") == "1.1"
        assert not await page.locator("#f-transcribe").is_checked()
        assert "input_audio_transcription" not in await _text(page, "#code-js")
        # Restored once: a plain reload starts from the defaults again.
        await page.reload()
        await page.wait_for_selector('#feed-state[data-state="live"]')
        assert await page.locator("#f-voice").input_value() == "alloy"
        assert await page.locator("#f-transcribe").is_checked()
        assert errors == []


@pytest.mark.parametrize("language", ["fr", "en"])
async def test_it_fits_1366_pixels_with_sip_callers_and_local_times_named(asgi_server, tmp_path, language):
    phone = await sync_to_async(_phone_call)("+33612345678")
    zone = "America/New_York"
    async with _chromium(
        tmp_path, locale=LANGUAGES[language]["locale"], timezone_id=zone, viewport={"width": 1366, "height": 900}
    ) as context:
        page, errors = await _open(context, asgi_server.url)
        await page.click("#start-call")
        await page.wait_for_selector('#c-connection[data-state="connected"]')
        call_id = await _text(page, "#c-call-id")
        await page.wait_for_selector(f'#calls-body tr[data-call-id="{call_id}"][data-status="active"]')

        # The phone call names its caller; the WebRTC call says what it is.
        sip_row = page.locator(f'#calls-body tr[data-call-id="{phone.call_id}"]')
        assert await sip_row.get_attribute("data-source") == "sip"
        assert (await sip_row.locator("td.sip-caller").text_content() or "").strip() == "☎ +33612345678"
        assert (await page.locator(f'#calls-body tr[data-call-id="{call_id}"] td').nth(2).text_content() or "").strip() == "WebRTC"
        # The statistics name the sources in words, not as the API's keys.
        await _wait_until(
            page,
            "(expected) => document.querySelector('#s-by-source').textContent.split(' · ').sort().join('|') === expected.join('|')",
            LANGUAGES[language]["by_source"],
        )

        # Times are the viewer's local time, and the page says which.
        label = page.locator("#local-time-zone")
        assert await label.get_attribute("data-time-zone") == zone
        offset = dt.datetime.now(ZoneInfo(zone)).strftime("%z")
        assert f"{zone} (UTC{offset[0].replace('-', '−')}{offset[1:3]}:{offset[3:]})" in (await label.text_content() or "")
        started = await sync_to_async(lambda: Call.objects.get(call_id=phone.call_id).created_at)()
        shown = (await sip_row.locator("td.started").text_content() or "").strip().replace("\u202f", " ")
        local = started.astimezone(ZoneInfo(zone))
        assert shown == (f"{local:%H:%M:%S}" if language == "fr" else f"{local:%-I:%M:%S %p}")

        # Nothing scrolls sideways: the page, the code boxes (both tabs), the list, the events.
        assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        assert await page.evaluate(NO_SIDEWAYS_SCROLL) == []
        await page.click('.tab[data-tab="code-py"]')
        assert await page.evaluate(NO_SIDEWAYS_SCROLL) == []
        await page.click('.tab[data-tab="code-js"]')
        if target := os.environ.get("DEMO_SCREENSHOTS"):
            await _wait_until(page, "() => Number(document.querySelector('#c-bytes').dataset.bytes) > 0")
            await asyncio.to_thread(Path(target).mkdir, parents=True, exist_ok=True)
            await page.evaluate("() => window.scrollTo(0, 0)")
            await page.screenshot(path=str(Path(target) / f"demo-page-{language}.png"))
        await page.click("#end-call")
        await page.wait_for_selector('#c-connection[data-state="closed"]')
        assert errors == []
