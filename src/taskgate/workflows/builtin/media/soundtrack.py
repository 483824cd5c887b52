"""Soundtracks for videos: audio read block by block from a file or from the synth,
looped or trimmed to the video's length and faded in and out.

Every source gives stereo float32 blocks of shape (2, n) at 44.1 kHz; nothing holds
a whole track, so a long video's audio costs no more memory than a short one's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np
from numpy.typing import NDArray

from taskgate.workflows.builtin.media.synth import Renderer

SAMPLE_RATE = 44_100
Block = NDArray[np.float32]
#: Seconds of the fade at the start (a click guard) and, at most, at the end.
FADE_IN = 0.05
FADE_OUT = 2.0


class Source(Protocol):
    """Audio read in order: ``read(n)`` gives up to ``n`` samples, none at the end."""

    def read(self, n: int) -> Block: ...

    def close(self) -> None: ...


class Synthesised:
    """A composed score, rendered as it is read."""

    def __init__(self, renderer: Renderer) -> None:
        self._renderer = renderer
        self._position = 0

    def read(self, n: int) -> Block:
        block = self._renderer.render(self._position, self._position + n)
        self._position += block.shape[1]
        return block

    def close(self) -> None:
        pass


class Decoded:
    """An audio file's first audio stream, decoded and resampled to stereo 44.1 kHz."""

    def __init__(self, path: Path) -> None:
        self._container: Any = av.open(str(path))
        stream = next((s for s in self._container.streams if s.type == "audio"), None)
        if stream is None:
            self._container.close()
            raise ValueError("the file has no audio stream")
        self._frames: Iterator[Any] = self._container.decode(stream)
        duration: float | None = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration:
            duration = self._container.duration / av.time_base
        #: The container's claim of the length (for progress only; may be absent).
        self.expected_samples = round(float(duration) * SAMPLE_RATE) if duration else None
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE)
        self._pending: list[Block] = []
        self._held = 0
        self._ended = False

    def _pull(self) -> None:
        frame = next(self._frames, None)
        frames = self._resampler.resample(frame)
        if frame is None:
            self._ended = True
        for out in frames:
            block = out.to_ndarray().astype(np.float32, copy=False)
            self._pending.append(block)
            self._held += block.shape[1]

    def read(self, n: int) -> Block:
        while self._held < n and not self._ended:
            self._pull()
        if not self._pending:
            return np.zeros((2, 0), dtype=np.float32)
        joined = np.concatenate(self._pending, axis=1)
        block, rest = joined[:, :n], joined[:, n:]
        self._pending = [rest] if rest.shape[1] else []
        self._held = rest.shape[1]
        return block

    def close(self) -> None:
        self._container.close()


class Limited:
    """A source cut after ``limit`` samples."""

    def __init__(self, source: Source, limit: int) -> None:
        self._source = source
        self._left = limit

    def read(self, n: int) -> Block:
        block = self._source.read(min(n, self._left)) if self._left > 0 else _EMPTY
        self._left -= block.shape[1]
        return block

    def close(self) -> None:
        self._source.close()


_EMPTY = np.zeros((2, 0), dtype=np.float32)


class Fitted:
    """``total`` samples of a source: looped when it is shorter, cut when longer,
    and (unless ``fade=False``) faded in over FADE_IN and out over up to FADE_OUT
    seconds (a quarter of the length at most). ``open_source`` is called again for
    each loop."""

    def __init__(self, open_source: Callable[[], Source], total: int, *, fade: bool = True) -> None:
        self.total = total
        self._faded = fade
        self._open = open_source
        self._source = open_source()
        self._position = 0
        self._given = 0  # samples the current source gave
        self._silent = False
        self._fade_in = max(1, min(round(FADE_IN * SAMPLE_RATE), total // 4))
        self._fade_out = max(1, min(round(FADE_OUT * SAMPLE_RATE), total // 4))

    @property
    def position(self) -> int:
        return self._position

    def read(self, n: int) -> Block:
        """The next ``min(n, samples left)`` samples, exactly."""
        n = min(n, self.total - self._position)
        if n <= 0:
            return np.zeros((2, 0), dtype=np.float32)
        parts: list[Block] = []
        got = 0
        while got < n and not self._silent:
            block = self._source.read(n - got)
            if block.shape[1] == 0:
                self._source.close()
                if self._given == 0:  # an empty source: the rest is silence
                    self._silent = True
                    break
                self._source, self._given = self._open(), 0
                continue
            self._given += block.shape[1]
            parts.append(block)
            got += block.shape[1]
        if got < n:
            parts.append(np.zeros((2, n - got), dtype=np.float32))
        out = np.concatenate(parts, axis=1) if len(parts) != 1 else parts[0].copy()
        self._shape(out, self._position)
        self._position += n
        return out

    def _shape(self, block: Block, start: int) -> None:
        if not self._faded:
            return
        index = np.arange(start, start + block.shape[1])
        gain = np.minimum(
            1.0,
            np.minimum(index / self._fade_in, (self.total - index) / self._fade_out),
        )
        if float(gain.min(initial=1.0)) < 1.0:
            block *= np.clip(gain, 0.0, 1.0).astype(np.float32)

    def close(self) -> None:
        if not self._silent:
            self._source.close()
