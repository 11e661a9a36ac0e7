"""Real headless Chromium (Debian's, never a downloaded build) driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    # Fake microphone (a tone) and auto-accepted permission prompts.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    # The embedded engine offers loopback ICE candidates only; Chromium skips loopback otherwise.
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _require_chromium() -> None:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        # Never skipped: a browser test that cannot run fails (.ci/run installs chromium).
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does).")


@pytest_asyncio.fixture
async def browser_context(tmp_path: Path) -> AsyncIterator[object]:
    """A fresh Chromium profile per test, closed afterwards."""
    async for context in _launch(tmp_path, CHROMIUM_ARGS):
        yield context


@pytest_asyncio.fixture
async def browser_context_without_microphone(tmp_path: Path) -> AsyncIterator[object]:
    """As `browser_context`, but nobody answers the microphone prompt: getUserMedia is refused."""
    async for context in _launch(tmp_path, [arg for arg in CHROMIUM_ARGS if arg != "--use-fake-ui-for-media-stream"]):
        yield context


async def _launch(tmp_path: Path, args: list[str], **options: Any) -> AsyncIterator[object]:
    """Chromium with a fresh profile; `options` (locale, viewport, timezone_id, permissions...)
    override the defaults, a French browser on a large screen."""
    _require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=args,
            **{"locale": "fr-FR", "viewport": {"width": 1440, "height": 1000}, **options},
        )
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            await context.close()
