"""localrealtime.dtls: the engine's peers share one DTLS certificate; every other peer keeps its own."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcdtlstransport import SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80
from OpenSSL import SSL

from localrealtime import dtls
from localrealtime.caller import Caller
from localrealtime.engine import Engine

pytestmark = pytest.mark.asyncio

SESSION = {"type": "realtime", "model": "gpt-realtime"}


def sha256(sdp: str) -> set[str]:
    return set(re.findall(r"a=fingerprint:sha-256 (\S+)", sdp))


async def test_it_answers_every_call_with_the_one_certificate_and_each_call_connects():
    engine, callers = Engine(), [Caller(), Caller()]
    try:
        offers, answers = [], []
        for caller in callers:
            offers.append(await caller.offer())
            _, answer = await engine.create(offer=offers[-1], session=SESSION)
            answers.append(answer)
            await caller.accept(answer)
        # Two DTLS handshakes at once with the same certificate on the engine's side.
        await asyncio.wait_for(asyncio.gather(*(caller.connected.wait() for caller in callers)), 15)
    finally:
        for caller in callers:
            await caller.close()
        for call in list(engine.calls.values()):
            await engine.close(call, reason="hangup")

    shared = {f.value for f in dtls.shared_certificate().getFingerprints() if f.algorithm == "sha-256"}
    assert sha256(answers[0]) == sha256(answers[1]) == shared
    # The callers (peers made outside the engine) each have a certificate of their own.
    assert sha256(offers[0]) != sha256(offers[1])
    assert not sha256(offers[0]) & shared


async def test_it_leaves_a_peer_made_elsewhere_its_own_certificate():
    offers = []
    for peer in (dtls.peer_connection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))):
        try:
            peer.addTransceiver("audio")
            await peer.setLocalDescription(await peer.createOffer())
            offers.append(peer.localDescription.sdp)
        finally:
            await peer.close()

    shared = {f.value for f in dtls.shared_certificate().getFingerprints() if f.algorithm == "sha-256"}
    assert sha256(offers[0]) == shared
    assert sha256(offers[1]) and not sha256(offers[1]) & shared


async def test_it_builds_one_ssl_context_per_profile_list_and_keeps_no_session():
    certificate = dtls.SharedCertificate.generateCertificate()
    both = [SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80]

    first, again = certificate._create_ssl_context(both), certificate._create_ssl_context(list(both))
    other = certificate._create_ssl_context([SRTP_AES128_CM_SHA1_80])

    assert first is again
    assert other is not first
    assert first.get_session_cache_mode() == SSL.SESS_CACHE_OFF
    assert certificate.getFingerprints() == certificate.getFingerprints()


async def test_it_renews_the_certificate_after_a_day(monkeypatch):
    current = dtls.shared_certificate()
    assert dtls.shared_certificate() is current

    monkeypatch.setattr(current, "made", current.made - dtls.RENEW_SECONDS - 1)
    renewed = dtls.shared_certificate()

    assert renewed is not current
    assert renewed.getFingerprints() != current.getFingerprints()
    assert dtls.shared_certificate() is renewed
