"""SDPs and instructions (what people say to the model, and how to reach their browser) never reach
the logs at INFO, neither in this process nor in the server's own log."""

from __future__ import annotations

import logging
import re
import uuid

import pytest


def _secrets_of(sdp: str) -> list[str]:
    # The ICE password and DTLS fingerprint are what would let someone else join the media path.
    return re.findall(r"^a=(?:ice-pwd|fingerprint):(.+?)\r?$", sdp, flags=re.M)


@pytest.mark.django_db(transaction=True)
def test_it_keeps_sdps_and_instructions_out_of_the_logs(api, sdp_offer, asgi_server, caplog):
    caplog.set_level(logging.INFO)
    marker = f"instructions-{uuid.uuid4().hex}"
    server_log_before = asgi_server.log.read_text(errors="replace")

    created = api.post("/api/realtime/calls", {"sdp": sdp_offer, "session": {"instructions": marker}}, format="json")
    call_id = created.json()["call_id"]
    api.get(f"/api/realtime/calls/{call_id}")
    api.get(f"/api/realtime/calls/{call_id}/events")
    api.delete(f"/api/realtime/calls/{call_id}")
    refused = api.post("/api/realtime/calls", {"sdp": sdp_offer, "session": {"instructions": marker, "voice": "bob"}}, format="json")

    assert created.status_code == 201 and refused.status_code == 400
    secrets = [marker, *_secrets_of(sdp_offer), *_secrets_of(created.json()["sdp_answer"])]
    assert len(secrets) >= 5
    logged_here = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    logged_by_server = asgi_server.log.read_text(errors="replace")[len(server_log_before) :]
    assert [s for s in secrets if s in logged_here] == []
    assert [s for s in secrets if s in logged_by_server] == []
