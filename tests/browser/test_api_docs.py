"""The API's docs pages in real Chromium, on the real server, under the site's content security
policy: Swagger UI and Redoc both render the schema, its outgoing webhooks included, without an
error, and nothing from elsewhere gets through."""

from __future__ import annotations

from typing import Any

import pytest

from realtime.webhooks.models import TEST_EVENT, EventType

pytestmark = [pytest.mark.browser, pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
EVENTS = [*EventType.values, TEST_EVENT]


async def _open(context: Any, url: str) -> tuple[Any, list[str], list[str]]:
    page = await context.new_page()
    errors: list[str] = []
    elsewhere: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(f"{message.text} {message.location}"))
    page.on("pageerror", lambda error: errors.append(str(error)))
    origin = url.split("/api/")[0]
    page.on("request", lambda request: request.url.startswith((origin, f"blob:{origin}/")) or elsewhere.append(request.url))
    await page.goto(url)
    return page, errors, elsewhere


async def test_it_renders_swagger_ui_and_redoc_with_the_outgoing_webhooks(asgi_server: Any, browser_context: Any) -> None:
    swagger, swagger_errors, swagger_elsewhere = await _open(browser_context, f"{asgi_server.url}/api/docs/")
    await swagger.wait_for_selector("h2:has-text('Webhooks')")
    operations = await swagger.locator(".opblock-summary-path").all_inner_texts()
    # Paths start with a slash; webhooks are named by their event type.
    assert [name for name in operations if not name.startswith("/")] == EVENTS
    await swagger.locator(".opblock-summary-path", has_text="call.ended").first.click()
    await swagger.wait_for_selector("text=webhook-signature")

    redoc, redoc_errors, redoc_elsewhere = await _open(browser_context, f"{asgi_server.url}/api/redoc/")
    await redoc.locator("h2", has_text="Create a WebRTC call").wait_for()
    menu = await redoc.eval_on_selector_all("li[data-item-id]", "items => items.map(item => item.dataset.itemId)")
    assert [item for item in menu if not item.startswith("tag/")] == [f"/paths/{event}/post" for event in EVENTS]
    await redoc.locator("li[data-item-id='/paths/call.ended/post']").click()
    await redoc.wait_for_selector("text=webhook-signature")

    assert swagger_errors == [], swagger_errors
    # Redoc's footer shows Redocly's logo from their site: our policy blocks it, by design.
    blocked_logo = [e for e in redoc_errors if e.startswith("Loading the image 'https://cdn.redoc.ly/")]
    assert len(blocked_logo) == 1 and [e for e in redoc_errors if e not in blocked_logo] == [], "\n".join(redoc_errors)
    assert swagger_elsewhere == [] and redoc_elsewhere == ["https://cdn.redoc.ly/redoc/logo-mini.svg"]  # tried, blocked
