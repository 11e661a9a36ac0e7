"""Audio both ends share: reading a received track, and a track paced in real time (the caller's
microphone, the engine's voice)."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import AsyncIterator, Callable

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms, Opus' usual frame


def is_loud(samples: np.ndarray) -> bool:
    """Whether float samples in [-1, 1] carry sound rather than (codec) silence: a peak above
    1000/32768, about -30 dBFS, as the caller counts frames with sound."""
    return bool(samples.size) and float(np.abs(samples).max()) > 1000 / 32768


async def audio_frames(track: MediaStreamTrack) -> AsyncIterator[AudioFrame]:
    """The track's audio frames until it ends (aiortc then raises MediaStreamError)."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        # An audio track yields audio frames; the check narrows the type for mypy.
        if isinstance(frame, AudioFrame):
            yield frame


class PacedAudioTrack(MediaStreamTrack):
    """Mono 48 kHz audio in 20 ms frames, paced in real time as a microphone is; silent unless a
    subclass says otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._sample = 0
        self._start: float | None = None
        # When (event loop time) the last frame with sound left, and when the current run of such
        # frames began: where a caller's speech ends and starts, as measured at the caller.
        self.loud_sent_at: float | None = None
        self.loud_since: float | None = None
        self._was_loud = False

    def next_samples(self) -> np.ndarray:
        """The next FRAME_SAMPLES float samples in [-1, 1] (self._sample is the first one's index)."""
        return np.zeros(FRAME_SAMPLES, dtype=np.float32)

    async def recv(self) -> AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self._sample / SAMPLE_RATE
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        samples = np.clip(self.next_samples(), -1, 1)
        loud = is_loud(samples)
        if loud:
            now = loop.time()
            if not self._was_loud:
                self.loud_since = now
            self.loud_sent_at = now
        self._was_loud = loud
        frame = AudioFrame.from_ndarray((samples * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._sample
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._sample += FRAME_SAMPLES
        return frame


class ClipPlayer(PacedAudioTrack):
    """The engine's voice: silence, except one clip at a time, with callbacks when its first and
    last frames leave (what OpenAI reports as `output_audio_buffer.started` / `.stopped`)."""

    def __init__(self) -> None:
        super().__init__()
        self._clip = np.zeros(0, dtype=np.float32)
        self._played = 0
        self._on_start: Callable[[], None] | None = None
        self._on_end: Callable[[], None] | None = None

    @property
    def playing(self) -> bool:
        return self._clip.size > 0

    @property
    def started(self) -> bool:
        """Whether the clip's first frame has left (a clip queued a moment ago has not yet)."""
        return self._played > 0

    def play(self, samples: np.ndarray, *, on_start: Callable[[], None], on_end: Callable[[], None]) -> None:
        """Play float samples in [-1, 1] at 48 kHz from the next frame (replacing any clip)."""
        self._clip, self._played = samples.astype(np.float32), 0
        self._on_start, self._on_end = on_start, on_end

    def cut(self) -> int:
        """Cut the clip short; returns how many milliseconds of it were sent."""
        played_ms = 1000 * self._played // SAMPLE_RATE
        self._clip, self._played, self._on_start, self._on_end = np.zeros(0, dtype=np.float32), 0, None, None
        return played_ms

    def next_samples(self) -> np.ndarray:
        chunk = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        if not self._clip.size:
            return chunk
        if self._played == 0 and self._on_start is not None:
            # Called as the frame is handed to the encoder: the moment the audio starts leaving.
            self._on_start()
        taken = self._clip[self._played : self._played + FRAME_SAMPLES]
        chunk[: taken.size] = taken
        self._played += FRAME_SAMPLES
        if self._played >= self._clip.size:
            on_end = self._on_end
            self.cut()
            if on_end is not None:
                on_end()
        return chunk
