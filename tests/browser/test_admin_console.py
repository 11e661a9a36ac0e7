"""The admin console in real Chromium against the real server: the call list at 1366 px, the call
page of a live call (following it live, ending it) and of a phone call (transferring it, with SIPp
as the caller), in French and English, without console errors. Saves the screenshots the README
shows (docs/screenshots/)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from realtime import services, sessions, upstream
from realtime.models import ApiKey, Call, CallEvent, SipRoute
from tests.conftest import Server
from tests.factories import make_call, measured
from tests.sip_tools import finish, sip_server, sipp, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

# docs/screenshots/ is made this way: ADMIN_SCREENSHOTS=docs/screenshots pytest tests/browser/test_admin_console.py
# (otherwise they go to a temporary directory, so a test run leaves the tree as it was).
SCREENSHOTS = Path(os.environ.get("ADMIN_SCREENSHOTS") or Path(tempfile.gettempdir()) / "iaposte-admin-screenshots")
WIDTH = 1366
NO_HORIZONTAL_SCROLL = "() => document.documentElement.scrollWidth <= window.innerWidth"


@pytest.fixture
def staff() -> tuple[str, str]:
    User.objects.create_superuser("sophie", password="a-long-test-password")
    return "sophie", "a-long-test-password"


async def _open(context: Any, *, language: str) -> tuple[Any, list[str]]:
    """A page at 1366 px in `language`, collecting console errors and uncaught exceptions."""
    page = await context.new_page()
    await page.set_viewport_size({"width": WIDTH, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return page, errors


@sync_to_async
def _session_key(username: str) -> str:
    # Signed in through Django's test client: the server hashes passwords with another hasher
    # than the test settings do, but reads the same session table with the same secret.
    client = Client()
    client.force_login(User.objects.get(username=username))
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def _sign_in(page: Any, server: Server, staff: tuple[str, str], next_path: str, language: str) -> None:
    # The language cookie is what the language switch (Django's set_language) leaves.
    cookies = [
        {"name": settings.SESSION_COOKIE_NAME, "value": await _session_key(staff[0]), "url": server.url},
        {"name": settings.LANGUAGE_COOKIE_NAME, "value": language, "url": server.url},
    ]
    await page.context.add_cookies(cookies)
    await page.goto(f"{server.url}{next_path}")
    assert "/login/" not in page.url


async def _until(check: Any, within: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (result := await check()):
        if loop.time() > deadline:
            raise TimeoutError(f"still false after {within} s")
        await asyncio.sleep(0.1)
    return result


async def _screenshot(page: Any, name: str) -> None:
    await asyncio.to_thread(SCREENSHOTS.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / name), full_page=False)


def _conversation(call: Call) -> None:
    """Two turns as the sideband monitor records them, and the quality figures it measured."""
    now = timezone.now()
    events = []
    for n, (asked, answered) in enumerate(
        [("Bonjour, je voudrais suivre mon colis.", "Bien sûr : quel est son numéro ?"), ("6A12345678901.", "Il arrive demain avant midi.")]
    ):
        user = {"id": f"item_u{n}", "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
        reply = {"id": f"item_a{n}", "type": "message", "role": "assistant", "content": [{"type": "output_audio", "transcript": answered}]}
        events += [
            services.UpstreamEvent(
                "input_audio_buffer.speech_started", f"e{n}a", {"audio_start_ms": 1000 * n, "item_id": f"item_u{n}"}, now
            ),
            services.UpstreamEvent("conversation.item.done", f"e{n}b", {"item": user}, now),
            services.UpstreamEvent(
                "conversation.item.input_audio_transcription.completed", f"e{n}c", {"item_id": f"item_u{n}", "transcript": asked}, now
            ),
            services.UpstreamEvent("conversation.item.done", f"e{n}d", {"item": reply}, now),
        ]
    services.call_record_events(call=call, events=events)
    measured(call, turns=2, latency_ms=(420, 610, 630), interruptions=0, talk_seconds=(4.2, 3.1))


@sync_to_async
def _history() -> list[Call]:
    """A few calls in every state, as the services record them."""
    key = ApiKey(name="Boutique en ligne")
    services.api_key_create(key, by=services.SYSTEM)
    calls = []
    for i, reason in enumerate([Call.EndReason.REMOTE_HANGUP, Call.EndReason.MAX_DURATION, None]):
        call = services.call_open(offer="v=0", session=sessions.parse_session({}), source="webrtc", actor="api", api_key=key)
        services.call_answer(call=call, created=upstream.CreatedCall(upstream_id=f"rtc_history{i}", sdp_answer="v=0"))
        if i == 0:
            _conversation(call)
        if reason:
            services.call_end(call=call, reason=reason, actor=CallEvent.Actor.UPSTREAM)
        calls.append(call)
    decision = services.SipDecision(accept=True, session=sessions.parse_session({}))
    phone = services.sip_call_receive(
        webhook_id="wh_list", upstream_id="rtc_phone", caller="+33612345678", called="+33180000002", headers=[], decision=decision
    )
    assert phone is not None
    services.call_end(call=phone, reason=Call.EndReason.MISSED, actor=CallEvent.Actor.UPSTREAM)
    return [*calls, phone]


@pytest.mark.parametrize("language", ["fr", "en"])
async def test_it_lists_calls_at_1366_px_and_finds_the_short_id(asgi_server, browser_context, staff, language):
    calls = await _history()
    page, errors = await _open(browser_context, language=language)
    await _sign_in(page, asgi_server, staff, "/admin/realtime/call/", language)

    assert await page.locator("html").get_attribute("lang") == language
    assert await page.locator("#site-name").inner_text() == "IAPosteManager"
    assert await page.evaluate(NO_HORIZONTAL_SCROLL)
    # Every column is on screen: the table fits its box (the admin scrolls it sideways otherwise).
    assert await page.evaluate(
        "() => { const box = document.querySelector('#changelist .results'); return box.scrollWidth <= box.clientWidth; }"
    )
    last = await page.evaluate("() => document.querySelector('#result_list thead th:last-child').getBoundingClientRect().right")
    assert last <= WIDTH
    assert await page.locator("#result_list tbody tr").count() == len(calls)
    assert await page.locator("#result_list .badge").first.is_visible()
    if language == "fr":
        await _screenshot(page, "admin-call-list.png")
        # A finished call's page: conversation (both sides, to the second), quality, events.
        await page.goto(f"{asgi_server.url}/admin/realtime/call/{calls[0].pk}/change/")
        assert await page.locator(".conversation .turn-user .text").first.inner_text() == "Bonjour, je voudrais suivre mon colis."
        assert await page.locator(".metrics td").first.inner_text() == "2"
        assert await page.evaluate(NO_HORIZONTAL_SCROLL)
        await _screenshot(page, "admin-call-page.png")
        # The same in the dark theme: our colours through the admin's variables.
        await page.emulate_media(color_scheme="dark")
        background = await page.evaluate("() => getComputedStyle(document.querySelector('#header')).backgroundColor")
        assert background == "rgb(11, 26, 48)"
        await _screenshot(page, "admin-call-page-dark.png")
        await page.emulate_media(color_scheme="light")
        await page.go_back()

    # The short id as the demo page shows it finds the call.
    short = calls[0].call_id[:11] + "…"
    await page.fill("#searchbar", short)
    await page.press("#searchbar", "Enter")
    await page.wait_for_url("**q=*")
    assert await page.locator("#result_list tbody tr").count() == 1
    assert await page.locator("#result_list tbody .call-id").get_attribute("data-copy") == calls[0].call_id
    assert await page.locator("#result_list tbody .copy-button").count() == 1

    # The other admin pages support staff use: none scrolls sideways at 1366 px either.
    for path in (
        "/admin/",
        "/admin/realtime/callevent/",
        "/admin/realtime/apikey/",
        "/admin/realtime/apikey/add/",
        "/admin/realtime/siproute/",
        "/admin/realtime/accessaudit/",
        "/admin/realtime/models/",
        "/admin/realtime/webhookendpoint/",
        "/admin/realtime/webhookendpoint/add/",
        "/admin/realtime/webhookmessage/",
        "/admin/axes/accessattempt/",
        "/admin/axes/accesslog/",
        "/admin/auth/user/",
        "/admin/dashboard/",
        f"/admin/realtime/call/{calls[-1].pk}/change/",
    ):
        await page.goto(f"{asgi_server.url}{path}")
        assert await page.evaluate(NO_HORIZONTAL_SCROLL), path
        assert await page.locator("#site-name").inner_text() == "IAPosteManager", path
    assert errors == []


@pytest.mark.parametrize("language", ["fr", "en"])
async def test_it_follows_a_live_call_and_ends_it_from_its_page(asgi_server, browser_context, staff, sdp_offer, language):
    followed, ended_here = await sync_to_async(make_call)(sdp_offer), await sync_to_async(make_call)(sdp_offer)
    page, errors = await _open(browser_context, language=language)
    await _sign_in(page, asgi_server, staff, f"/admin/realtime/call/{followed.pk}/change/", language)

    await page.wait_for_selector('#live-state[data-state="live"]')
    assert await page.evaluate(NO_HORIZONTAL_SCROLL)
    assert await page.locator("#call-status").get_attribute("data-status") == "active"
    # Ended elsewhere (through the API, in the server): the open page shows it without a reload.
    await page.evaluate("() => { window.notReloaded = true; }")
    response = await sync_to_async(httpx.delete)(f"{asgi_server.url}/api/realtime/calls/{followed.call_id}")
    assert response.status_code == 200, response.text
    await page.wait_for_selector('#call-status[data-status="ended"]')
    assert await page.evaluate("() => window.notReloaded === true")
    assert await page.locator("#end-call").count() == 0

    # Ended from its own page: the button, then the confirmation.
    await page.goto(f"{asgi_server.url}/admin/realtime/call/{ended_here.pk}/change/")
    await page.wait_for_selector('#live-state[data-state="live"]')
    await page.click("#end-call")
    await page.wait_for_selector("#confirm-end")
    assert await sync_to_async(lambda: Call.objects.get(pk=ended_here.pk).status)() == Call.Status.ACTIVE
    await page.click("#confirm-end")
    await page.wait_for_selector('#call-status[data-status="ended"]')
    ended = await sync_to_async(
        lambda: list(CallEvent.objects.filter(call=ended_here, event_type="call.ended").values_list("actor", "data"))
    )()
    assert [(actor, data["staff_user"]) for actor, data in ended] == [("admin", "sophie")]
    assert errors == []


@pytest.fixture
def sip(tmp_path: Path) -> Iterator[tuple[Server, int]]:
    SipRoute.objects.create(name="Everything", position=1000, session={"instructions": "Bonjour", "voice": "marin"})
    (tmp_path / "server").mkdir()
    with sip_server(tmp_path / "server") as running:
        yield running


@pytest.mark.parametrize("language", ["en", "fr"])
async def test_it_transfers_a_phone_call_from_its_page(sip, browser_context, staff, tmp_path, language):
    server, port = sip
    caller = sipp(port, "uac_transfer.xml", tmp_path)
    try:
        call = await sync_to_async(wait_for)(lambda: Call.objects.filter(source=Call.Source.SIP, status=Call.Status.ACTIVE).first())
        page, errors = await _open(browser_context, language=language)
        await _sign_in(page, server, staff, f"/admin/realtime/call/{call.pk}/change/", language)
        await page.wait_for_selector('#live-state[data-state="live"]')
        assert await page.evaluate(NO_HORIZONTAL_SCROLL)
        if language == "en":
            await _screenshot(page, "admin-phone-call-page.png")

        await page.click("#transfer-call")
        await page.fill("#target-uri", "sip:desk@127.0.0.1")
        if language == "en":
            await _screenshot(page, "admin-transfer-confirm.png")
        await page.click("#confirm-transfer")
        await page.wait_for_selector("#call-transferred-to")
        assert (await page.locator("#call-transferred-to").inner_text()).strip() == "sip:desk@127.0.0.1"
    finally:
        code, output = await sync_to_async(finish)(caller, tmp_path)
    assert code == 0, output
    transferred = await sync_to_async(
        lambda: list(CallEvent.objects.filter(call=call, event_type="call.transferred").values_list("actor", "data"))
    )()
    assert [(actor, data["target_uri"], data["staff_user"]) for actor, data in transferred] == [("admin", "sip:desk@127.0.0.1", "sophie")]
    assert errors == []
