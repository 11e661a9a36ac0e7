"""The caller's words from the demo page, in real Chromium (its fake microphone playing a spoken
sentence), against the real server and the embedded engine: "Transcribe what I say" (on by
default) asks for input transcription, the engine transcribes each turn, and the caller's line is
filled on the page and on the admin's call page."""

from __future__ import annotations

import re
import subprocess
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async

from realtime.models import Call
from tests.conftest import Server, start_server, stop_server

from .conftest import CHROMIUM_ARGS, _launch
from .test_admin_console import _sign_in, staff  # noqa: F401 (a fixture)
from .test_demo_call import _text

pytestmark = [pytest.mark.browser, pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

# What the embedded engine can truthfully say of a turn it cannot recognise (docs/admin.md).
ENGINE_TRANSCRIPT = re.compile(r"^\[\d+\.\d\d s of speech\]$")


@pytest.fixture
def monitored_server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server recording each call's sideband events (the call page's conversation is made of them)."""
    server = start_server(
        tmp_path_factory.mktemp("monitored"), extra_env={"REALTIME_MONITORS": "embedded", "REALTIME_MONITOR_FLUSH_MS": "50"}
    )
    yield server
    stop_server(server)


@pytest.fixture
def spoken_sentence(tmp_path: Path) -> Path:
    """A sentence said by espeak-ng, then 1.5 s of silence: a turn the engine's voice activity
    detection ends, as a person's would."""
    spoken, wav = tmp_path / "spoken.wav", tmp_path / "caller.wav"
    subprocess.run(["espeak-ng", "-v", "fr", "-w", str(spoken), "Bonjour, je voudrais suivre mon colis."], check=True, timeout=30)
    with wave.open(str(spoken), "rb") as said, wave.open(str(wav), "wb") as out:
        out.setparams(said.getparams())
        out.writeframes(said.readframes(said.getnframes()))
        out.writeframes(b"\0" * int(1.5 * said.getframerate()) * said.getsampwidth() * said.getnchannels())
    return wav


@pytest_asyncio.fixture
async def speaking_browser(tmp_path: Path, spoken_sentence: Path) -> AsyncIterator[object]:
    """Chromium whose microphone says that sentence, in a loop."""
    async for context in _launch(tmp_path, [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={spoken_sentence}"]):
        yield context


async def test_it_shows_what_the_caller_said_on_the_page_and_the_call_page(monitored_server, speaking_browser, staff):  # noqa: F811
    page = await speaking_browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{monitored_server.url}/realtime-api.html")
    await page.wait_for_selector('#feed-state[data-state="live"]')
    assert await page.locator("#f-transcribe").is_checked()
    assert "gpt-realtime-whisper" in await _text(page, "#code-js")

    await page.click("#start-call")
    await page.wait_for_selector('#c-connection[data-state="connected"]')
    call_id = await _text(page, "#c-call-id")

    # Each sentence is a turn: it is transcribed, on the data channel and on the page.
    await page.wait_for_selector(
        '#events-list li[data-source="channel"][data-event-type="conversation.item.input_audio_transcription.completed"]'
    )
    said = await _text(page, '#transcript li[data-role="user"] .text')
    assert ENGINE_TRANSCRIPT.match(said)
    assert await page.locator("#transcript-empty").is_hidden()
    # The server recorded it too (its sideband monitor), pushed to the page's event view.
    await page.wait_for_selector(
        '#events-list li[data-source="server"][data-event-type="conversation.item.input_audio_transcription.completed"]'
    )
    await page.click("#end-call")
    await page.wait_for_selector('#c-connection[data-state="closed"]')

    # The call was asked for with transcription, and the call page shows the caller's words.
    call = await sync_to_async(Call.objects.get)(call_id=call_id)
    assert call.session_upstream["audio"]["input"]["transcription"] == {"model": "gpt-realtime-whisper"}
    admin = await speaking_browser.new_page()
    await _sign_in(admin, monitored_server, staff, f"/admin/realtime/call/{call.pk}/change/", "fr")
    caller_lines = await admin.locator(".conversation .turn-user .text").all_inner_texts()
    assert caller_lines and all(ENGINE_TRANSCRIPT.match(line) for line in caller_lines)
    assert await admin.locator(".conversation .turn-user .untranscribed").count() == 0
    assert errors == []


async def test_it_asks_for_no_transcription_when_unticked(asgi_server, browser_context):
    page = await browser_context.new_page()
    await page.goto(f"{asgi_server.url}/realtime-api.html")
    await page.wait_for_selector('#feed-state[data-state="live"]')

    await page.uncheck("#f-transcribe")
    assert "input_audio_transcription" not in await _text(page, "#code-js")
    await page.click("#start-call")
    await page.wait_for_selector('#c-connection[data-state="connected"]')
    call_id = await _text(page, "#c-call-id")
    await page.click("#end-call")
    await page.wait_for_selector('#c-connection[data-state="closed"]')

    call = await sync_to_async(Call.objects.get)(call_id=call_id)
    assert "input_audio_transcription" not in call.session_requested
    assert (call.session_upstream["audio"].get("input") or {}).get("transcription") is None
