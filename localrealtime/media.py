"""What the engine's WebRTC peer and the scriptable caller both do with a received audio track."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame


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
