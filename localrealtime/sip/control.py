"""The checks OpenAI makes on accept, reject and refer bodies, then the user agent's answer."""

from __future__ import annotations

from typing import Any

from .. import protocol


def _only(body: Any, *allowed: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise protocol.ApiError(400, "The request body must be a JSON object.", code="invalid_type")
    for key in body:
        if key not in allowed:
            raise protocol.ApiError(400, f"Unknown parameter: '{str(key)[:100]}'.", param=str(key)[:100], code="unknown_parameter")
    return body


async def sip_operation(agent: Any, operation: str, call_id: str, body: Any) -> bool:
    """Accept, reject or refer a phone call; False when the engine has no such call (404)."""
    if operation == "accept":
        session = protocol.check_session(body)
        detection = ((session.get("audio") or {}).get("input") or {}).get("turn_detection") or {}
        for name in ("threshold", "prefix_padding_ms", "silence_duration_ms"):
            if name in detection:
                # As OpenAI's SIP accept does (openai-agents-js#741): WebRTC takes them, SIP does not.
                param = f"session.audio.input.turn_detection.{name}"
                raise protocol.ApiError(400, f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")
        return agent is not None and await agent.accept(call_id, session)
    if operation == "reject":
        status = _only(body, "status_code").get("status_code", 603)
        if isinstance(status, bool) or not isinstance(status, int) or not 300 <= status <= 699:
            raise protocol.ApiError(400, "Invalid 'status_code': a SIP status from 300 to 699.", param="status_code", code="invalid_value")
        return agent is not None and bool(agent.reject(call_id, status))
    target = _only(body, "target_uri").get("target_uri")
    if not isinstance(target, str) or not target.startswith(("sip:", "sips:", "tel:")) or len(target) > 1000:
        raise protocol.ApiError(400, "Invalid 'target_uri': a sip: or tel: URI.", param="target_uri", code="invalid_value")
    return agent is not None and bool(agent.refer(call_id, target))


def configure_sip(agent: Any, changes: Any) -> dict[str, Any]:
    """The engine's own test controls for its SIP side (never part of OpenAI's contract)."""
    if not isinstance(changes, dict) or set(changes) - {"webhook_copies", "webhook_secret"}:
        raise ValueError("expected an object with webhook_copies and/or webhook_secret")
    if "webhook_copies" in changes:
        copies = changes["webhook_copies"]
        if not isinstance(copies, int) or not 0 <= copies <= 5:
            raise ValueError("webhook_copies: 0 to 5")
        agent.webhook_copies = copies
    if "webhook_secret" in changes:
        agent.webhook_secret = str(changes["webhook_secret"])
    return {"webhook_copies": agent.webhook_copies}
