"""Webhooks as OpenAI sends them: Standard Webhooks headers, HMAC-SHA256 over "{id}.{timestamp}.{body}".

The SDK verifies signatures but does not make them, so the engine signs here (the scheme is the
four lines below); the broker's side verifies with the SDK, which is what keeps the two honest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from .. import protocol

logger = logging.getLogger(__name__)


def sign(*, secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def call_incoming(*, call_id: str, sip_headers: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "object": "event",
        "id": protocol.new_id("evt", length=32),
        "type": "realtime.call.incoming",
        "created_at": int(time.time()),
        "data": {"call_id": call_id, "sip_headers": sip_headers, "sip_media_security": "rtp"},
    }


async def deliver(client: httpx.AsyncClient, *, url: str, secret: str, event: dict[str, Any], webhook_id: str) -> int:
    """POST one signed webhook; returns the HTTP status (0 when the app could not be reached).

    A retry keeps its `webhook_id` (Standard Webhooks), which is what receivers deduplicate on.
    """
    body = json.dumps(event).encode()
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret=secret, webhook_id=webhook_id, timestamp=timestamp, body=body),
    }
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        logger.warning("Webhook to %s failed: %s", url, type(exc).__name__)
        return 0
    return response.status_code
