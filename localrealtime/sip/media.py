"""The SIP leg's media: plain RTP (RTP/AVP) with G.711 (PCMU, PCMA) and RFC 4733 DTMF.

As the engine's WebRTC peer does, the call echoes what the caller says (each packet's payload
goes straight back, re-stamped with our own SSRC and sequence) and listens to it: packets are
decoded with aiortc's G.711 decoder and fed, as audio frames, to the engine's voice-activity
detection, so a phone call gets the same turns, transcripts and usage as a browser call. DTMF
digits become `input_audio_buffer.dtmf_event_received` sideband events.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.codecs.g711 import PcmDecoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from av import AudioFrame

logger = logging.getLogger(__name__)

# Static payload types of RFC 3551, and the codec names aiortc's decoder takes.
CODECS = {"PCMU": (0, "pcm_mulaw"), "PCMA": (8, "pcm_alaw")}
DTMF_EVENTS = "0123456789*#ABCD"
# Frames waiting for the voice-activity detector; beyond this (a stalled loop) the oldest go.
MAX_QUEUED_FRAMES = 500


@dataclass(frozen=True)
class Offer:
    """What the caller's SDP offer says about its audio: where to send, and what it can take."""

    host: str
    port: int
    payload_types: list[int]
    dtmf_payload_type: int | None


def parse_offer(sdp: str) -> Offer | None:
    """The first audio section of an offer (RTP/AVP, IPv4); None when there is none we can use."""
    host, port, payload_types, dtmf = "", 0, [], None
    in_audio = False
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("c=IN IP4 ") and (not host or in_audio):
            host = line.split()[2].split("/")[0]
        elif line.startswith("m="):
            if in_audio:
                break
            parts = line[2:].split()
            if len(parts) >= 4 and parts[0] == "audio" and parts[2] == "RTP/AVP" and parts[1].isdigit():
                in_audio, port = True, int(parts[1])
                payload_types = [int(p) for p in parts[3:] if p.isdigit()]
        elif in_audio and line.lower().startswith("a=rtpmap:") and "telephone-event/8000" in line.lower():
            number = line[len("a=rtpmap:") :].split()[0]
            dtmf = int(number) if number.isdigit() else None
    if not in_audio or not host or not port:
        return None
    return Offer(host=host, port=port, payload_types=payload_types, dtmf_payload_type=dtmf)


def choose_codec(offer: Offer, preferences: list[str]) -> tuple[str, int] | None:
    """The first codec of our preference list the caller offered."""
    for name in preferences:
        if name in CODECS and CODECS[name][0] in offer.payload_types:
            return name, CODECS[name][0]
    return None


def answer_sdp(*, host: str, port: int, codec: str, dtmf_payload_type: int | None) -> str:
    payload_type = CODECS[codec][0]
    session = random.randint(1, 2**31)
    formats = f"{payload_type}" + (f" {dtmf_payload_type}" if dtmf_payload_type is not None else "")
    lines = [
        "v=0",
        f"o=- {session} {session} IN IP4 {host}",
        # What OpenAI's SIP answers are seen to carry.
        "s=OAI",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        f"a=rtpmap:{payload_type} {codec}/8000",
    ]
    if dtmf_payload_type is not None:
        lines += [f"a=rtpmap:{dtmf_payload_type} telephone-event/8000", f"a=fmtp:{dtmf_payload_type} 0-16"]
    lines += ["a=ptime:20", "a=sendrecv"]
    return "\r\n".join(lines) + "\r\n"


class DecodedAudio(MediaStreamTrack):
    """The caller's audio as decoded frames, for the engine's voice-activity detection."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.frames: asyncio.Queue[AudioFrame | None] = asyncio.Queue()

    def put(self, frame: AudioFrame | None) -> None:
        if self.frames.qsize() >= MAX_QUEUED_FRAMES:
            self.frames.get_nowait()
        self.frames.put_nowait(frame)

    async def recv(self) -> AudioFrame:
        frame = await self.frames.get()
        if frame is None:
            raise MediaStreamError
        return frame


class RtpSession(asyncio.DatagramProtocol):
    """One call's RTP socket: echo audio back, decode it for VAD, turn DTMF into digits."""

    def __init__(self, *, codec: str, remote: tuple[str, int], dtmf_payload_type: int | None, on_digit: Callable[[str], None]):
        self.codec = codec
        self.payload_type = CODECS[codec][0]
        self.remote = remote
        self.dtmf_payload_type = dtmf_payload_type
        self.on_digit = on_digit
        self.decoder = PcmDecoder(CODECS[codec][1])  # type: ignore[arg-type]
        self.audio = DecodedAudio()
        self.transport: asyncio.DatagramTransport | None = None
        self.ssrc = random.getrandbits(32)
        self.sequence = random.getrandbits(16)
        self.timestamp_offset = random.getrandbits(32)
        self.received = 0
        self.echoed = 0
        self.digits: list[str] = []
        # RFC 4733 sends an event's end packet three times; one digit per event (by timestamp).
        self._last_event: int | None = None
        self._latched = False

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            return
        if not self._latched:
            # Symmetric RTP: answer where the caller really sends from (NAT, or a wrong c= line).
            self.remote, self._latched = addr, True
        self.received += 1
        if packet.payload_type == self.dtmf_payload_type:
            self._dtmf(packet)
        elif packet.payload_type == self.payload_type:
            self._echo(packet)
            for frame in self.decoder.decode(JitterFrame(data=packet.payload, timestamp=packet.timestamp)):
                self.audio.put(frame)  # type: ignore[arg-type]

    def _echo(self, packet: RtpPacket) -> None:
        if self.transport is None:
            return
        self.sequence = (self.sequence + 1) & 0xFFFF
        echo = RtpPacket(
            payload_type=self.payload_type,
            marker=packet.marker,
            sequence_number=self.sequence,
            timestamp=(packet.timestamp + self.timestamp_offset) & 0xFFFFFFFF,
            ssrc=self.ssrc,
            payload=packet.payload,
        )
        self.transport.sendto(echo.serialize(), self.remote)
        self.echoed += 1

    def _dtmf(self, packet: RtpPacket) -> None:
        if len(packet.payload) < 4:
            return
        event, flags = packet.payload[0], packet.payload[1]
        if not flags & 0x80 or packet.timestamp == self._last_event:
            return  # not the end of the event yet, or a repeat of its end packet
        self._last_event = packet.timestamp
        if event < len(DTMF_EVENTS):
            self.digits.append(DTMF_EVENTS[event])
            self.on_digit(DTMF_EVENTS[event])

    def close(self) -> None:
        self.audio.put(None)
        if self.transport is not None:
            self.transport.close()

    def describe(self) -> dict[str, Any]:
        return {"codec": self.codec, "received": self.received, "echoed": self.echoed, "digits": "".join(self.digits)}


async def open_rtp(*, host: str, **kwargs: Any) -> RtpSession:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(lambda: RtpSession(**kwargs), local_addr=(host, 0))
    return protocol
