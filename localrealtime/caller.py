"""A scriptable WebRTC caller (aiortc): what a browser does, for scripts, benchmarks and tests.

It sends a synthesized voice-like signal (tone bursts separated by silence), opens the
`oai-events` data channel, and measures the audio that comes back.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from localrealtime.media import FRAME_SAMPLES, SAMPLE_RATE, PacedAudioTrack, audio_frames, is_loud


def voice_like(t: np.ndarray, amplitude: float) -> np.ndarray:
    """A 220 Hz tone with a little vibrato: loud enough to register as speech to an energy VAD."""
    return amplitude * np.sin(2 * math.pi * 220 * t + 0.5 * np.sin(2 * math.pi * 5 * t))


class ScriptedAudioTrack(PacedAudioTrack):
    """Audio following a script of (seconds, amplitude) segments, then silence.

    Amplitude 0 is silence; anything else is a voice-like tone (`voice_like`).
    """

    def __init__(self, script: list[tuple[float, float]] | None = None, *, loop: bool = False):
        super().__init__()
        self.script = script if script is not None else [(1.0, 0.3), (1.0, 0.0)]
        self.loop = loop

    def _amplitude(self, seconds: float) -> float:
        total = sum(length for length, _ in self.script)
        if self.loop and total:
            seconds %= total
        for length, amplitude in self.script:
            if seconds < length:
                return amplitude
            seconds -= length
        return 0.0

    def next_samples(self) -> np.ndarray:
        t = (self._sample + np.arange(FRAME_SAMPLES)) / SAMPLE_RATE
        return voice_like(t, self._amplitude(self._sample / SAMPLE_RATE))


class QueuedAudioTrack(PacedAudioTrack):
    """Silence, except what is queued with `play()` (a clip, a tone), in real time.

    Lets a script speak when it decides to (after checking what the server recorded), rather
    than on a fixed timeline.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.float32)

    def play(self, samples: np.ndarray) -> None:
        """Queue float samples in [-1, 1] at 48 kHz after whatever is still playing."""
        self._pending = np.concatenate([self._pending, samples.astype(np.float32)])

    def tone(self, seconds: float, amplitude: float = 0.3) -> None:
        self.play(voice_like(np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE, amplitude))

    def silence(self, seconds: float) -> None:
        self.play(np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32))

    @property
    def playing(self) -> bool:
        return self._pending.size > 0

    def next_samples(self) -> np.ndarray:
        chunk = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        taken = self._pending[:FRAME_SAMPLES]
        chunk[: taken.size] = taken
        self._pending = self._pending[FRAME_SAMPLES:]
        return chunk


def load_clip(path: str) -> np.ndarray:
    """Decode an audio file (a WAV from espeak-ng, say) to mono 48 kHz float samples."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    parts = []
    with av.open(path) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        parts.append(out.to_ndarray().reshape(-1))
    return np.concatenate(parts).astype(np.float32) / 32768.0


class Caller:
    """One WebRTC call from the caller's side."""

    def __init__(
        self, script: list[tuple[float, float]] | None = None, *, loop_script: bool = False, audio: MediaStreamTrack | None = None
    ):
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(audio if audio is not None else ScriptedAudioTrack(script, loop=loop_script))
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[dict[str, Any]] = []
        self.frames_received = 0
        self.loud_frames_received = 0
        # When (event loop time) each run of frames with sound began to arrive: the other side's
        # speech as heard here, after the network and the jitter buffer.
        self.heard_at: list[float] = []
        self._consumers: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()
        self.channel_open = asyncio.Event()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._consumers.append(asyncio.ensure_future(self._consume(track)))

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()

        @self.channel.on("open")
        def on_open() -> None:
            self.channel_open.set()

        @self.channel.on("message")
        def on_message(message: Any) -> None:
            self.events.append(json.loads(message))

    async def _consume(self, track: MediaStreamTrack) -> None:
        quiet = True
        async for frame in audio_frames(track):
            self.frames_received += 1
            loud = is_loud(frame.to_ndarray() / 32768)
            if loud:
                self.loud_frames_received += 1
                if quiet:
                    self.heard_at.append(asyncio.get_running_loop().time())
            quiet = not loud

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    def send_event(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def wait_for(self, predicate: Any, within: float = 10.0) -> None:
        """Wait until predicate() is true, or raise TimeoutError.

        Polled every 20 ms: the conditions (frames counted, events received) have no event to wait on.
        """
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._consumers:
            task.cancel()


async def sample_offer() -> str:
    """A real offer (audio and the oai-events data channel) from a caller closed straight after."""
    caller = Caller()
    try:
        return await caller.offer()
    finally:
        await caller.close()


async def _call(base_url: str, seconds: float, session: dict[str, Any]) -> None:
    import httpx

    # Pauses long enough for the engine to answer each turn (speaking again would cut it short).
    caller = Caller(script=[(0.6, 0.3), (2.0, 0.0)], loop_script=True)
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            created = await http.post("/api/realtime/calls", json={"sdp": await caller.offer(), "session": session})
            body = created.json()
            if created.status_code != 201:
                raise SystemExit(f"create failed ({created.status_code}): {body}")
            print(f"call {body['call_id']} {body['status']}")
            await caller.accept(body["sdp_answer"])
            await asyncio.wait_for(caller.connected.wait(), 15)
            print("WebRTC connected")
            await asyncio.sleep(seconds)
            print(f"audio frames received: {caller.frames_received} ({caller.loud_frames_received} with sound)")
            print(f"data channel events: {[e['type'] for e in caller.events]}")
            ended = await http.delete(f"/api/realtime/calls/{body['call_id']}")
            print(f"ended: {ended.json()['call']['status']} after {ended.json()['call']['duration_seconds']} s")
    finally:
        await caller.close()


def main() -> None:
    """`python -m localrealtime.caller offer` prints a real SDP offer; `... call URL` makes a whole call."""
    import argparse

    from .ice import restrict_host_addresses

    parser = argparse.ArgumentParser(prog="python -m localrealtime.caller", description=main.__doc__)
    parser.add_argument("--ice-address", action="append", default=None, help="host candidate address (default 127.0.0.1)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("offer", help="print an SDP offer (audio + the oai-events data channel)")
    call = sub.add_parser("call", help="create a call through the API, connect, listen, end it")
    call.add_argument("base_url", nargs="?", default="http://localhost:5000")
    call.add_argument("--seconds", type=float, default=3.0)
    call.add_argument("--session", default='{"model": "gpt-4o-realtime-preview", "voice": "alloy"}', help="session JSON")
    args = parser.parse_args()
    restrict_host_addresses(args.ice_address or ["127.0.0.1"])

    if args.command == "offer":
        print(asyncio.run(sample_offer()), end="")
    else:
        asyncio.run(_call(args.base_url, args.seconds, json.loads(args.session)))


if __name__ == "__main__":
    main()
