"""The engine's SIP user agent on its own (real UDP on loopback): what it refuses, and OpenAI's checks on accept/reject/refer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sipmessage import Message, Response

from localrealtime import protocol
from localrealtime.engine import Engine
from localrealtime.sip import run_sip
from localrealtime.sip.control import sip_operation
from localrealtime.sip.media import answer_sdp, parse_offer
from tests.sip_tools import free_port

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n"


def invite(user: str, *, formats: str = "0 101", call_id: str = "c1@test", cseq: int = 1) -> bytes:
    body = OFFER.format(port=40000, formats=formats) + "a=rtpmap:101 telephone-event/8000\r\n"
    return (
        f"INVITE sip:{user}@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKtest\r\n"
        "From: <sip:alice@127.0.0.1>;tag=abc\r\n"
        "To: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} INVITE\r\n"
        "Contact: <sip:alice@127.0.0.1:5999>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


class Phone:
    """A bare UDP socket that sends SIP messages and reads what comes back."""

    def __init__(self, port: int):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, ("127.0.0.1", self.port))

    async def receive(self) -> Response:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), 5)
        message = Message.parse(data)
        assert isinstance(message, Response)
        return message


@pytest_asyncio.fixture
async def agent(settings: Any) -> AsyncIterator[tuple[Engine, Phone]]:
    # Nobody listens for the webhooks here: the agent must carry on without them.
    settings.LOCALREALTIME_SIP_WEBHOOK_URL = f"http://127.0.0.1:{free_port()}/api/realtime/sip/webhook"
    engine, stop, port = Engine(), asyncio.Event(), free_port()
    task = asyncio.create_task(run_sip(engine, stop, host="127.0.0.1", port=port))
    for _ in range(500):
        if engine.sip is not None:
            break
        await asyncio.sleep(0.01)
    phone = Phone(port)
    yield engine, phone
    stop.set()
    await task
    phone.sock.close()


@pytest.mark.asyncio
async def test_it_answers_404_to_a_call_for_another_project(agent):
    _, phone = agent
    await phone.send(invite("proj_other"))
    assert (await phone.receive()).code == 404


@pytest.mark.asyncio
async def test_it_answers_488_to_an_offer_without_g711(agent):
    _, phone = agent
    await phone.send(invite("proj_local", formats="9"))
    assert (await phone.receive()).code == 488


@pytest.mark.asyncio
async def test_it_says_trying_at_once_then_refuses_the_call_nobody_decided(agent, settings):
    engine, phone = agent
    settings.LOCALREALTIME_SIP_DECIDE_SECONDS = 0.3
    await phone.send(invite("proj_local"))

    assert (await phone.receive()).code == 100
    final = await phone.receive()
    assert final.code == settings.LOCALREALTIME_SIP_DECIDE_STATUS and ";tag=" in final.headers["To"]
    # The call was announced (a webhook, which nobody received), and is gone: a late accept gets 404.
    call_id = next(iter(engine.sip.dialogs.values())).call_id
    assert engine.requests["sip_invite"] == 1
    assert await sip_operation(engine.sip, "accept", call_id, {"type": "realtime"}) is False


@pytest.mark.asyncio
async def test_it_repeats_its_answer_to_a_retransmitted_invite_and_answers_options(agent):
    _, phone = agent
    await phone.send(invite("proj_local", call_id="c2@test"))
    assert (await phone.receive()).code == 100
    await phone.send(invite("proj_local", call_id="c2@test"))
    assert (await phone.receive()).code == 100
    await phone.send(
        b"OPTIONS sip:proj_local@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKo\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:proj_local@127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    assert (await phone.receive()).code == 200


@pytest.mark.asyncio
async def test_it_answers_400_to_a_request_it_cannot_read(agent):
    _, phone = agent
    await phone.send(
        b"BYE sip:proj_local@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKb\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:proj_local@127.0.0.1>\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    )  # no Call-ID
    assert (await phone.receive()).code == 400


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("operation", "body", "param"),
    [
        ("accept", {"type": "realtime", "voice": "alloy"}, "session.voice"),
        (
            "accept",
            {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}},
            "session.audio.input.turn_detection.silence_duration_ms",
        ),
        ("reject", {"status_code": 200}, "status_code"),
        ("reject", {"status": 486}, "status"),
        ("refer", {"target_uri": "http://example.com"}, "target_uri"),
        ("refer", {}, "target_uri"),
    ],
)
async def test_it_refuses_what_openai_refuses_on_accept_reject_and_refer(agent, operation, body, param):
    engine, _ = agent
    with pytest.raises(protocol.ApiError) as refused:
        await sip_operation(engine.sip, operation, "rtc_x", body)
    assert (refused.value.status, refused.value.param) == (400, param)


def test_it_reads_the_callers_offer_and_answers_in_g711_with_dtmf():
    offer = parse_offer(OFFER.format(port=4000, formats="8 0 101") + "a=rtpmap:101 telephone-event/8000\r\n")
    assert offer is not None
    assert (offer.host, offer.port, offer.payload_types, offer.dtmf_payload_type) == ("127.0.0.1", 4000, [8, 0, 101], 101)
    answer = answer_sdp(host="127.0.0.1", port=5000, codec="PCMA", dtmf_payload_type=101)
    assert "m=audio 5000 RTP/AVP 8 101\r\n" in answer and "a=fmtp:101 0-16\r\n" in answer and "s=OAI\r\n" in answer
    assert parse_offer(OFFER.format(port=4000, formats="0").replace("RTP/AVP", "UDP/TLS/RTP/SAVPF")) is None
