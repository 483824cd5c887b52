"""Audio-reactive frames: spectrum bars, a waveform or particles over a background.

Backgrounds (the given images, darkened, or a gradient) and the title are drawn
once, in RGB with Pillow, and converted to yuv420p; each frame copies its
background and fills rectangles straight into the Y, U and V planes (corners on
even pixels, so the half-size chroma lines up). No colour conversion happens per
frame, which keeps a frame to about a millisecond of work.
"""

from __future__ import annotations

import colorsys
import threading
from pathlib import Path
from typing import Literal

import av
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from taskgate.workflows.builtin.media.layers import Pixels, planes
from taskgate.workflows.builtin.media.listen import Listening
from taskgate.workflows.builtin.media.particles import Particles
from taskgate.workflows.builtin.media.slides import font, load_image

Style = Literal["spectrum", "waveform", "particles"]
#: How much of a background image's brightness shows behind the visuals.
DIM = 0.45


def _even(value: float) -> int:
    return int(value) // 2 * 2


def yuv_of(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    """An RGB colour (0..255) in limited-range BT.601 YUV, as swscale converts."""
    r, g, b = (c / 255 for c in rgb)
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return round(y), round(u), round(v)


def _palette(count: int) -> list[tuple[int, int, int]]:
    """Cyan through violet to pink, bright."""
    colours = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb(0.5 + 0.45 * i / max(1, count - 1), 0.7, 1.0)
        colours.append(yuv_of((r * 255, g * 255, b * 255)))
    return colours


class Visualizer:
    """Renders frame ``k`` of a music video; safe to call from several threads."""

    def __init__(
        self,
        listening: Listening,
        width: int,
        height: int,
        *,
        style: Style = "spectrum",
        backgrounds: list[Path] | None = None,
        title: str | None = None,
    ) -> None:
        self.listening = listening
        self.width, self.height = width, height
        self.style = style
        self._paths = backgrounds or []
        self._title = title.strip() if title else None
        self._lock = threading.Lock()
        self._backgrounds: dict[int, Pixels] = {}
        bands = listening.bands.shape[1]
        self._colours = _palette(bands)
        self._wave_colour = yuv_of((120, 230, 255))
        # The waveform fills its height at the track's loudest moment.
        peak = float(np.abs(listening.waves).max(initial=0.0))
        self._wave_gain = 0.95 / peak if peak > 1e-4 else 1.0
        self._particles = (
            Particles(listening, width, height, _palette(24)) if style == "particles" else None
        )

    # -- backgrounds --------------------------------------------------------------

    def _background_index(self, k: int) -> int:
        if not self._paths:
            return 0
        return min(len(self._paths) - 1, k * len(self._paths) // max(1, self.listening.frames))

    def _background(self, index: int) -> Pixels:
        with self._lock:
            found = self._backgrounds.get(index)
            if found is None:
                found = self._backgrounds[index] = self._draw_background(index)
            return found

    def _draw_background(self, index: int) -> Pixels:
        width, height = self.width, self.height
        if self._paths:
            pixels = load_image(self._paths[index], width, height)
            image = Image.fromarray((pixels.astype(np.float32) * DIM).astype(np.uint8), "RGB")
        else:
            down = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
            top = np.array([14, 18, 40], dtype=np.float32)
            bottom = np.array([48, 16, 64], dtype=np.float32)
            rows = top + (bottom - top) * down
            image = Image.fromarray(np.repeat(rows, width, axis=1).astype(np.uint8), "RGB")
        if self._title:
            size = max(14, round(min(width, height) * 0.06))
            pen = ImageDraw.Draw(image)
            pen.text(
                (width / 2, height * 0.1),
                self._title,
                font=font(size),
                fill=(255, 255, 255),
                anchor="mm",
                stroke_width=max(1, size // 16),
                stroke_fill=(0, 0, 0),
            )
        frame = av.VideoFrame.from_ndarray(np.asarray(image, dtype=np.uint8), format="rgb24")
        array = frame.reformat(format="yuv420p").to_ndarray()
        return array.astype(np.uint8, copy=False)

    # -- frames -------------------------------------------------------------------

    def frame(self, k: int) -> av.VideoFrame:
        yuv = self._background(self._background_index(k)).copy()
        if self._particles is not None:
            self._particles.draw(yuv, k)
        elif self.style == "spectrum":
            self._bars(yuv, self.listening.bands[k])
        else:
            self._wave(yuv, self.listening.waves[k])
        return av.VideoFrame.from_ndarray(yuv, format="yuv420p")

    def _fill(
        self, yuv: Pixels, x0: int, x1: int, y0: int, y1: int, colour: tuple[int, ...]
    ) -> None:
        """Fill the rectangle [x0, x1) × [y0, y1) (even corners) with a YUV colour."""
        if x1 <= x0 or y1 <= y0:
            return
        y, u, v = planes(yuv, self.width, self.height)
        y[y0:y1, x0:x1] = colour[0]
        u[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = colour[1]
        v[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = colour[2]

    def _bars(self, yuv: Pixels, levels: NDArray[np.float32]) -> None:
        width, height = self.width, self.height
        count = len(levels)
        left, span = width * 0.08, width * 0.84
        step = span / count
        base = _even(height * 0.88)
        tallest = height * 0.6
        for i, level in enumerate(levels):
            bar = _even(float(level) * tallest)
            if bar <= 0:
                continue
            x0 = _even(left + i * step)
            x1 = max(x0 + 2, _even(left + i * step + step * 0.72))
            self._fill(yuv, x0, x1, base - bar, base, self._colours[i])

    def _wave(self, yuv: Pixels, columns: NDArray[np.float32]) -> None:
        width, height = self.width, self.height
        count = len(columns)
        left, span = width * 0.05, width * 0.9
        step = span / count
        middle = height * 0.55
        reach = height * 0.3 * self._wave_gain
        thick = max(2, _even(height / 180))
        for i, (low, high) in enumerate(columns):
            x0 = _even(left + i * step)
            x1 = max(x0 + 2, _even(left + (i + 1) * step))
            y0 = _even(middle - float(high) * reach)
            y1 = max(y0 + thick, _even(middle - float(low) * reach))
            self._fill(yuv, x0, x1, y0, y1, self._wave_colour)
