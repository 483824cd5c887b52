"""Audio-reactive particles: sparks thrown out from the middle of the frame.

Each frame emits sparks in proportion to how loud it is; how fast they fly
follows the loudness, how big they are follows the bass, and their colour the
direction they take. A pulsing core in the middle follows the bass too. Silence
emits nothing, so the picture empties within a spark's lifetime.

All sparks of a video are drawn from one seeded generator when the video is
set up (a few numbers each), and a spark's place at any age has a closed form
(flight slowed by drag), so frame ``k`` is drawn from ``k`` alone: frames can be
rendered in any order, on any thread, and the same audio gives the same video.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from taskgate.workflows.builtin.media.layers import Pixels, planes
from taskgate.workflows.builtin.media.listen import Listening

#: Sparks a frame emits at full loudness, and the loudness (0..1 of the band
#: levels) below which it emits none.
MAX_EMIT = 48
QUIET = 0.03
#: Loudness is judged against this percentile of the track's own frames, so a
#: quiet track throws as many sparks as a loud one.
REFERENCE_PERCENTILE = 90
#: How long a spark lives, and how much of its speed is left after each frame.
LIFE_SECONDS = 0.9
DRAG = 0.94
#: Spark sides in pixels at 360p (scaled with the frame), smallest to largest.
SIZES = (2, 4, 6, 8)
SEED = 20_240_601
Floats = NDArray[np.float32]


def _relative(levels: Floats) -> Floats:
    """Levels as 0..1 of the track's own loud level; 0 at or below QUIET."""
    reference = max(QUIET + 0.05, float(np.percentile(levels, REFERENCE_PERCENTILE)))
    out: Floats = np.clip((levels - QUIET) / (reference - QUIET), 0.0, 1.0).astype(np.float32)
    return out


def _even(value: NDArray[np.float64]) -> NDArray[np.int64]:
    return (np.floor(value / 2) * 2).astype(np.int64)


class Particles:
    """The sparks of a video of ``listening``, drawn into ``width``×``height`` frames."""

    def __init__(
        self,
        listening: Listening,
        width: int,
        height: int,
        colours: list[tuple[int, int, int]],
    ) -> None:
        self.width, self.height = width, height
        self._colours = np.array(colours, dtype=np.float32)  # YUV, one per hue step
        bands = listening.bands
        split = max(1, bands.shape[1] // 6)
        #: Per frame: loudness (all bands) and bass (the lowest sixth), 0..1.
        self.loudness: Floats = bands.mean(axis=1).astype(np.float32)
        self.bass: Floats = bands[:, :split].mean(axis=1).astype(np.float32)
        self.life = max(2, round(LIFE_SECONDS * listening.fps))
        scale = min(width, height) / 360

        drive = _relative(self.loudness)
        self.bass = _relative(self.bass)
        # Onsets (a rise in loudness) throw an extra burst.
        rise = np.clip(np.diff(drive, prepend=np.float32(0)), 0.0, 1.0)
        counts = np.round(MAX_EMIT * np.clip(drive**1.5 + 2 * rise, 0.0, 1.5)).astype(np.int64)
        rng = np.random.default_rng(SEED)
        total = int(counts.sum())
        self._birth = np.repeat(np.arange(len(counts)), counts)  # sorted by frame
        self._angle = rng.uniform(0.0, 2 * math.pi, total)
        energy = drive[self._birth]
        bass = self.bass[self._birth]
        # Pixels a spark flies in its first frame: faster when louder.
        self._speed = scale * (3.0 + 12.0 * energy) * rng.uniform(0.5, 1.5, total)
        self._start = min(width, height) * (0.05 + 0.06 * bass) * rng.uniform(0.8, 1.2, total)
        pick = np.clip(bass * len(SIZES) * rng.uniform(0.5, 1.3, total), 0, len(SIZES) - 1)
        self._size = (np.array(SIZES)[pick.astype(np.int64)] * max(1.0, scale) // 2 * 2).astype(
            np.int64
        )
        self._hue = (self._angle / (2 * math.pi) * len(colours)).astype(np.int64) % len(colours)
        self._bright = 0.7 + 0.5 * energy
        self._core_colour = np.array(colours[len(colours) // 2], dtype=np.float32)
        radius = math.ceil(min(width, height) * 0.06) * 2  # even
        steps = np.arange(-radius, radius, dtype=np.float32) + 0.5
        self._core_distance = np.hypot(steps[:, None], steps[None, :])
        self._core_radius = radius

    def draw(self, yuv: Pixels, k: int) -> None:
        """Draw frame ``k``'s core and sparks into a yuv420p array (in place)."""
        self._core(yuv, k)
        first = int(np.searchsorted(self._birth, k - self.life + 1, side="left"))
        last = int(np.searchsorted(self._birth, k, side="right"))
        if last <= first:
            return
        alive = slice(first, last)
        age = (k - self._birth[alive]).astype(np.float64)
        flown = self._speed[alive] * (1 - DRAG**age) / (1 - DRAG)
        reach = self._start[alive] + flown
        angle = self._angle[alive]
        x = self.width / 2 + np.cos(angle) * reach
        y = self.height / 2 + np.sin(angle) * reach
        fade = np.minimum(1.0, (1 - age / self.life) * self._bright[alive])
        size = self._size[alive]
        hue = self._hue[alive]
        for side in np.unique(size):
            these = size == side
            self._sparks(yuv, x[these], y[these], int(side), hue[these], fade[these])

    def _sparks(
        self,
        yuv: Pixels,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        side: int,
        hue: NDArray[np.int64],
        fade: NDArray[np.float64],
    ) -> None:
        """Squares of ``side`` pixels (even corners) centred near (x, y)."""
        width, height = self.width, self.height
        left, top = _even(x - side / 2), _even(y - side / 2)
        inside = (left >= 0) & (top >= 0) & (left <= width - side) & (top <= height - side)
        if not inside.any():
            return
        left, top, hue, fade = left[inside], top[inside], hue[inside], fade[inside]
        colour = self._colours[hue]  # (n, 3)
        alpha = fade.astype(np.float32)[:, None, None]
        py, pu, pv = planes(yuv, width, height)
        span = np.arange(side)
        rows = top[:, None, None] + span[None, :, None]
        cols = left[:, None, None] + span[None, None, :]
        _mix(py, rows, cols, colour[:, 0], alpha)
        half = np.arange(side // 2)
        rows = top[:, None, None] // 2 + half[None, :, None]
        cols = left[:, None, None] // 2 + half[None, None, :]
        _mix(pu, rows, cols, colour[:, 1], alpha)
        _mix(pv, rows, cols, colour[:, 2], alpha)

    def _core(self, yuv: Pixels, k: int) -> None:
        """A disc in the middle whose radius follows the bass (none in silence)."""
        radius = self._core_radius * float(self.bass[k]) ** 1.5
        if radius < 2:
            return
        width, height = self.width, self.height
        reach = self._core_radius
        cx, cy = width // 2 // 2 * 2, height // 2 // 2 * 2
        inside = self._core_distance < radius
        py, pu, pv = planes(yuv, width, height)
        colour = self._core_colour
        box = py[cy - reach : cy + reach, cx - reach : cx + reach]
        box[inside] = (box[inside] * 0.3 + colour[0] * 0.7).astype(np.uint8)
        half = inside[::2, ::2]
        for plane, value in ((pu, colour[1]), (pv, colour[2])):
            part = plane[
                (cy - reach) // 2 : (cy + reach) // 2, (cx - reach) // 2 : (cx + reach) // 2
            ]
            part[half] = (part[half] * 0.3 + value * 0.7).astype(np.uint8)


def _mix(
    plane: Pixels,
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    colour: Floats,
    alpha: Floats,
) -> None:
    """Blend each square of ``plane`` at (rows, cols) towards its spark's colour."""
    base = plane[rows, cols].astype(np.float32)
    plane[rows, cols] = (base + (colour[:, None, None] - base) * alpha).astype(np.uint8)
