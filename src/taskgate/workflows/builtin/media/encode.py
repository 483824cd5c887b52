"""Encoding: blocks of float samples streamed into an MP3 file with PyAV.

The encoder takes blocks of any length (PyAV re-frames them to the codec's frame
size) and holds only what the codec buffers, so a long track never sits in memory
whole. The output is the same bytes for the same samples.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Self

import av
import numpy as np
from numpy.typing import NDArray

MP3_BIT_RATE = 192_000


class MediaWriter:
    """A file being encoded. Use as a context manager: leaving it normally finishes
    the file; leaving it by an exception removes the partial file."""

    def __init__(self, path: Path, container: Any) -> None:
        self.path = path
        self._container = container
        self._closed = False

    def _flush(self) -> None:
        """Mux what the encoders still hold (before the container closes)."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        if self._closed:
            return
        self._closed = True
        self._flush()
        self._container.close()

    def abort(self) -> None:
        """Stop without finishing, and remove what was written."""
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            finally:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def audio_frame(block: NDArray[np.float32], sample_rate: int, pts: int) -> av.AudioFrame:
    """A stereo float32 block, shape (2, n), as a frame starting at sample ``pts``."""
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(block, dtype=np.float32), format="fltp", layout="stereo"
    )
    frame.sample_rate = sample_rate
    frame.pts = pts
    return frame


class Mp3Writer(MediaWriter):
    """Writes stereo float32 blocks, shape (2, n), to an MP3 file."""

    def __init__(
        self,
        path: Path,
        *,
        sample_rate: int,
        bit_rate: int = MP3_BIT_RATE,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(path, av.open(str(path), "w", format="mp3"))
        self.sample_rate = sample_rate
        self.samples_written = 0
        for key, value in (metadata or {}).items():
            self._container.metadata[key] = value
        self._stream = self._container.add_stream("libmp3lame", rate=sample_rate, layout="stereo")
        self._stream.bit_rate = bit_rate

    def write(self, block: NDArray[np.float32]) -> None:
        if block.shape[1] == 0:
            return
        frame = audio_frame(block, self.sample_rate, self.samples_written)
        self.samples_written += block.shape[1]
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def _flush(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
