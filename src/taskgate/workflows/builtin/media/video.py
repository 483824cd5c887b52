"""Video: frame sizes, and an MP4 writer that takes frames and audio as they come.

The writer encodes H.264 (libx264, yuv420p, preset veryfast, CRF 23) and AAC
(44.1 kHz stereo, 192 kb/s) into an MP4 whose index sits at the front (faststart),
so a player can start before the download ends. Frames and audio blocks are encoded
as they arrive; only what the codecs buffer is held.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from numpy.typing import NDArray

from taskgate.workflows.builtin.media.encode import MediaWriter, audio_frame

Aspect = Literal["16:9", "9:16", "1:1"]
Resolution = Literal["360p", "720p", "1080p"]

FPS = 24
AUDIO_RATE = 44_100
AUDIO_BIT_RATE = 192_000
_SHORT_SIDE = {"360p": 360, "720p": 720, "1080p": 1080}
_RATIO = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1)}


def frame_size(aspect: Aspect, resolution: Resolution) -> tuple[int, int]:
    """Width and height: ``resolution`` is the short side; both are even (yuv420p
    halves them for colour). 720p 16:9 is 1280×720, 720p 9:16 is 720×1280."""
    short = _SHORT_SIDE[resolution]
    across, down = _RATIO[aspect]
    long = round(short * max(across, down) / min(across, down) / 2) * 2
    return (long, short) if across > down else (short, long) if down > across else (short, short)


class Mp4Writer(MediaWriter):
    """Writes yuv420p frames (and, with ``audio=True``, stereo float32 blocks of
    shape (2, n)) to an MP4 file."""

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        *,
        fps: int = FPS,
        audio: bool = False,
        preset: str = "veryfast",
        crf: int = 23,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 in yuv420p needs even sizes, not {width}×{height}")
        super().__init__(path, av.open(str(path), "w", options={"movflags": "+faststart"}))
        self.width, self.height, self.fps = width, height, fps
        self.frames_written = 0
        self.samples_written = 0
        video: Any = self._container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = Fraction(1, fps)
        # libx264 runs sliced threads (encode() waits) unless frame threads are asked
        # for; frame threads let encoding overlap the rendering of the next frames.
        video.codec_context.thread_type = "FRAME"
        video.options = {"preset": preset, "crf": str(crf)}
        self._video = video
        self._audio: Any = None
        if audio:
            self._audio = self._container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
            self._audio.bit_rate = AUDIO_BIT_RATE
            # The fast coder takes a third of the default's time, at a quality
            # loss that a soundtrack at 192 kb/s does not show.
            self._audio.options = {"aac_coder": "fast"}

    def write_frame(self, frame: av.VideoFrame) -> None:
        """Encode the next frame (a yuv420p frame of the writer's size)."""
        frame.pts = self.frames_written
        frame.time_base = Fraction(1, self.fps)
        self.frames_written += 1
        self._container.mux(self._video.encode(frame))

    def write_audio(self, block: NDArray[np.float32]) -> None:
        """Encode the next stereo block (float32, shape (2, n), 44.1 kHz)."""
        if self._audio is None:
            raise ValueError("this writer has no audio stream")
        if block.shape[1] == 0:
            return
        frame = audio_frame(block, AUDIO_RATE, self.samples_written)
        frame.time_base = Fraction(1, AUDIO_RATE)
        self.samples_written += block.shape[1]
        self._container.mux(self._audio.encode(frame))

    @property
    def seconds(self) -> float:
        return self.frames_written / self.fps

    def _flush(self) -> None:
        self._container.mux(self._video.encode(None))
        if self._audio is not None:
            self._container.mux(self._audio.encode(None))
