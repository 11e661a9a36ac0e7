"""The seed's Python examples, run as written against the real server (needs the test server).

Each example is taken from the seed text (`docs/seed.txt`, the original description kept verbatim)
at test time. Only what the seed leaves to the reader is supplied: the SDP offer (a real WebRTC
offer, or a SIP-style one for Example 2), the call id "Terminer un appel" ends, and the base URL
(`http://localhost:5000` becomes the test server's).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

SEED = Path(__file__).resolve().parent.parent / "docs" / "seed.txt"
SEED_BASE = "http://localhost:5000"

# What a SIP trunk (Twilio, Vonage) puts in its INVITE: plain RTP, G.711, no ICE and no DTLS.
SIP_OFFER = (
    "v=0\r\no=- 1234 1 IN IP4 192.0.2.10\r\ns=SIP call\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)


def _example(heading: str) -> str:
    """The first Python block after `heading` in the seed."""
    text = SEED.read_text(encoding="utf-8")
    start = text.index(heading)
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None, heading
    return match.group(1)


def _run(code: str, base_url: str, namespace: dict[str, Any]) -> dict[str, Any]:
    # exec: the seed's own code, run as an integrator would paste it.
    exec(compile(code.replace(SEED_BASE, base_url), "<seed>", "exec"), namespace)
    return namespace


def _with_offer(code: str, offer: str) -> str:
    """The quick start declares its offer as a placeholder literal; that literal is the real one here."""
    placeholder = re.compile(r'sdp_offer = """.*?"""', re.S)
    assert placeholder.search(code)
    return placeholder.sub(lambda _: f"sdp_offer = {offer!r}", code)


@pytest.mark.django_db(transaction=True)
def test_it_runs_the_quick_start_then_ends_the_call(asgi_server, sdp_offer, capsys):
    quick_start = _run(_with_offer(_example("### 1. Créer un appel WebRTC"), sdp_offer), asgi_server.url, {})
    call_id = quick_start["data"]["call_id"]
    _run(_example("### 2. Terminer un appel"), asgi_server.url, {**quick_start, "call_id": call_id})

    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"Call ID: {call_id}"
    assert printed[1] == "SDP Answer: v=0"
    assert quick_start["response"].status_code == 201
    assert printed[-1].startswith("{'success': True, ")
    call = requests.get(f"{asgi_server.url}/api/realtime/calls/{call_id}", timeout=10).json()["call"]
    assert (call["status"], call["end_reason"], call["model"]) == ("ended", "api_hangup", "gpt-4o-realtime-preview")


@pytest.mark.django_db(transaction=True)
def test_it_answers_example_2_s_sip_offer_with_a_clear_400(asgi_server):
    namespace: dict[str, Any] = {"sip_sdp_offer": SIP_OFFER}

    # The example reads `call_id` from the answer without checking it: with a 400 there is none.
    with pytest.raises(KeyError, match="call_id"):
        _run(_example("### Exemple 2: Support téléphonique SIP"), asgi_server.url, namespace)

    response = namespace["response"]
    assert response.status_code == 400
    error = response.json()
    assert error["success"] is False
    # A clear answer: this endpoint takes WebRTC offers; phone calls come through the SIP trunk.
    assert error["error"]["code"] == "sip_offer_not_supported"
    assert error["error"]["details"]["field"] == "sdp" and "docs/sip.md" in error["error"]["message"]
    assert requests.get(f"{asgi_server.url}/api/realtime/calls", timeout=10).json()["count"] == 0


@pytest.mark.django_db(transaction=True)
def test_it_runs_example_4_s_call_manager_until_the_call_ends(asgi_server, sdp_offer, capsys):
    namespace: dict[str, Any] = {"sdp_offer": sdp_offer}
    failures: list[BaseException] = []

    def run() -> None:
        try:
            _run(_example("### Exemple 4: Monitoring et gestion d'appels"), asgi_server.url, namespace)
        except BaseException as exc:  # reported by the test below, not lost in the thread
            failures.append(exc)

    example = threading.Thread(target=run, daemon=True)
    example.start()
    # The example watches until its call ends: support staff end it while it watches.
    deadline = time.monotonic() + 30
    while not namespace.get("call_id") and example.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    call_id = namespace["call_id"]
    ended = requests.delete(f"{asgi_server.url}/api/realtime/calls/{call_id}", timeout=10)
    example.join(timeout=30)

    assert not failures
    assert not example.is_alive()
    assert ended.status_code == 200
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"Appel {call_id} en cours" or printed[0].startswith(f"Appel {call_id} terminé - Durée: ")
    assert printed[-3].startswith(f"Appel {call_id} terminé - Durée: ")
    assert printed[-2] == "Total appels: 1"
    assert printed[-1].startswith("Durée moyenne: ")
    assert namespace["manager"].active_calls == []
