"""Listening for visuals: per video frame, the spectrum's bands and the waveform.

The audio is read block by block (never whole). For each frame, a Hann window of
WINDOW samples centred on the frame's middle gives BANDS log-spaced band levels
(0 silent … 1 loud, over a RANGE_DB range, rising at once and falling smoothly),
and the frame's own samples give COLUMNS (min, max) pairs for a waveform. What is
kept is small: a few hundred numbers per frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from taskgate.workflows.builtin.media.soundtrack import SAMPLE_RATE, Source

WINDOW = 2048
BANDS = 48
COLUMNS = 160
RANGE_DB = 60.0
LOW_HZ, HIGH_HZ = 40.0, 16_000.0
#: How much of a band's level is left one frame after its sound stops.
DECAY = 0.7
#: Samples read at a time.
READ = 65_536
# A full-scale sine's peak under a Hann window is WINDOW / 4.
_FULL_SCALE_DB = 20 * np.log10(WINDOW / 4)


@dataclass(frozen=True, slots=True)
class Listening:
    """What the frames of a video of some audio show."""

    fps: int
    samples: int  # of the audio, counted as decoded
    bands: NDArray[np.float32]  # (frames, BANDS), 0..1
    waves: NDArray[np.float32]  # (frames, COLUMNS, 2): min and max, -1..1

    @property
    def frames(self) -> int:
        return int(self.bands.shape[0])


def _band_edges() -> NDArray[np.int64]:
    hz = np.geomspace(LOW_HZ, HIGH_HZ, BANDS + 1)
    bins = np.round(hz * WINDOW / SAMPLE_RATE).astype(np.int64)
    # Every band gets at least one bin of its own.
    for i in range(1, len(bins)):
        bins[i] = max(bins[i], bins[i - 1] + 1)
    return bins


def listen(
    source: Source, fps: int, on_progress: Callable[[int], None] = lambda _samples: None
) -> Listening:
    """Read ``source`` to its end; ``on_progress(samples read)`` after each block
    (it may raise to stop)."""
    edges = _band_edges()
    window = np.hanning(WINDOW).astype(np.float32)
    half = WINDOW // 2
    pending = np.zeros(half, dtype=np.float32)  # silence before the start
    offset = -half  # the sample index of pending[0]
    bands: list[NDArray[np.float32]] = []
    waves: list[NDArray[np.float32]] = []
    level = np.zeros(BANDS, dtype=np.float32)
    total = 0
    ended = False
    while not ended:
        block = source.read(READ)
        if block.shape[1] == 0:
            ended = True
            # Silence after the end, so that the last frames have whole windows.
            mono = np.zeros(WINDOW, dtype=np.float32)
        else:
            mono = block.mean(axis=0, dtype=np.float32)
            total += block.shape[1]
        pending = np.concatenate([pending, mono])
        while True:
            k = len(bands)
            start = k * SAMPLE_RATE // fps
            stop = (k + 1) * SAMPLE_RATE // fps
            if ended and start >= total:
                break
            centre = (start + stop) // 2
            if centre + half - offset > len(pending):
                break
            piece = pending[centre - half - offset : centre + half - offset]
            spectrum = np.abs(np.fft.rfft(piece * window))
            sums = np.add.reduceat(spectrum[: edges[-1]] ** 2, edges[:-1])
            widths = np.diff(edges).astype(np.float32)
            db = 10 * np.log10(sums / widths + 1e-12) - _FULL_SCALE_DB
            now = np.clip((db + RANGE_DB) / RANGE_DB, 0.0, 1.0).astype(np.float32)
            level = np.maximum(now, level * DECAY)
            bands.append(level.copy())
            own = pending[start - offset : stop - offset]
            per = max(1, len(own) // COLUMNS)
            cols = np.resize(own, COLUMNS * per).reshape(COLUMNS, per)
            waves.append(np.stack([cols.min(axis=1), cols.max(axis=1)], axis=1))
        # Keep what the next frame's window still needs.
        k = len(bands)
        keep_from = max(offset, k * SAMPLE_RATE // fps - WINDOW)
        pending = pending[keep_from - offset :]
        offset = keep_from
        on_progress(total)
    source.close()
    if not bands:
        raise ValueError("the audio has no samples")
    return Listening(fps, total, np.stack(bands), np.stack(waves))
