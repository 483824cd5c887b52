"""Pictures in yuv420p planes: the plane views of a frame, blends, and layers
(text or shapes drawn once with Pillow) laid over frames with an alpha.

Frames travel as yuv420p arrays laid out as PyAV does (the Y plane, then U, then
V, each chroma plane half size both ways). A layer is converted to that layout
once, with its alpha at full and at half size, so laying it over a frame is a
few integer operations per pixel and never a colour conversion. Layers sit on
even rows and columns so the half-size chroma lines up.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from numpy.typing import NDArray
from PIL import Image

Pixels = NDArray[np.uint8]
Alpha = NDArray[np.uint16]  # 0..256


def planes(yuv: Pixels, width: int, height: int) -> tuple[Pixels, Pixels, Pixels]:
    """Views of the Y, U and V planes of a yuv420p array as PyAV lays it out."""
    flat = yuv.reshape(-1)
    luma = width * height
    chroma = luma // 4
    y = flat[:luma].reshape(height, width)
    u = flat[luma : luma + chroma].reshape(height // 2, width // 2)
    v = flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2)
    return y, u, v


def to_yuv(frame: av.VideoFrame) -> Pixels:
    """A frame as a yuv420p array, laid out as PyAV does (Y, then U, then V)."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    array = frame.to_ndarray()
    return array.astype(np.uint8, copy=False)


def rgb_to_yuv(rgb: Pixels) -> Pixels:
    """RGB pixels (height × width × 3, even sides) as a yuv420p array."""
    return to_yuv(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))


def blend(a: Pixels, b: Pixels, weight: int) -> Pixels:
    """``a`` towards ``b`` by weight/256."""
    mixed = a.astype(np.uint16) * np.uint16(256 - weight) + b.astype(np.uint16) * np.uint16(weight)
    out: Pixels = (mixed >> 8).astype(np.uint8)
    return out


def over(base: Pixels, top: Pixels, alpha: Alpha) -> None:
    """``top`` over ``base`` (in place), by alpha/256."""
    mixed = base.astype(np.uint16) * (256 - alpha) + top.astype(np.uint16) * alpha
    base[...] = (mixed >> 8).astype(np.uint8)


def ease(x: float) -> float:
    """Smoothstep: 0 → 0, 1 → 1, flat at both ends."""
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


@dataclass(frozen=True, slots=True)
class Layer:
    """An RGBA picture converted for laying over yuv420p frames at (left, top)."""

    left: int  # even
    top: int  # even
    y: Pixels
    u: Pixels
    v: Pixels
    alpha: Alpha  # full size
    alpha_half: Alpha  # for the half-size chroma planes

    @property
    def width(self) -> int:
        return int(self.y.shape[1])

    @property
    def height(self) -> int:
        return int(self.y.shape[0])

    def draw(
        self, yuv: Pixels, width: int, height: int, *, weight: float = 1.0, dx: int = 0, dy: int = 0
    ) -> None:
        """Lay the layer over a ``width``×``height`` frame (in place), its alpha
        scaled by ``weight`` and moved by (dx, dy) pixels (rounded to even); what
        falls outside the frame is cut off."""
        scale = round(min(1.0, max(0.0, weight)) * 256)
        if scale == 0:
            return
        left, top = self.left + dx // 2 * 2, self.top + dy // 2 * 2
        x0, y0 = max(0, left), max(0, top)
        x1, y1 = min(width, left + self.width), min(height, top + self.height)
        if x1 <= x0 or y1 <= y0:
            return
        alpha, half = self.alpha, self.alpha_half
        if scale < 256:
            alpha = ((alpha * scale) >> 8).astype(np.uint16)
            half = ((half * scale) >> 8).astype(np.uint16)
        fy, fu, fv = planes(yuv, width, height)
        sx, sy = x0 - left, y0 - top  # where the visible part starts in the layer
        w, h = x1 - x0, y1 - y0
        over(fy[y0:y1, x0:x1], self.y[sy : sy + h, sx : sx + w], alpha[sy : sy + h, sx : sx + w])
        hx, hy, hw, hh = x0 // 2, y0 // 2, w // 2, h // 2
        sx, sy = sx // 2, sy // 2
        mask = half[sy : sy + hh, sx : sx + hw]
        over(fu[hy : hy + hh, hx : hx + hw], self.u[sy : sy + hh, sx : sx + hw], mask)
        over(fv[hy : hy + hh, hx : hx + hw], self.v[sy : sy + hh, sx : sx + hw], mask)


def layer_of(image: Image.Image, left: int = 0, top: int = 0) -> Layer:
    """An RGBA picture as a layer whose corner is at (left, top), both rounded
    down to even; an odd side gains a transparent row or column."""
    rgba = image.convert("RGBA")
    width, height = rgba.size
    even_w, even_h = width + width % 2, height + height % 2
    if (even_w, even_h) != (width, height):
        padded = Image.new("RGBA", (even_w, even_h), (0, 0, 0, 0))
        padded.paste(rgba, (0, 0))
        rgba = padded
    pixels = np.asarray(rgba, dtype=np.uint8)
    y, u, v = planes(rgb_to_yuv(pixels[..., :3]), even_w, even_h)
    alpha: Alpha = ((pixels[..., 3].astype(np.uint16) * 256 + 127) // 255).astype(np.uint16)
    half: Alpha = (
        alpha.reshape(even_h // 2, 2, even_w // 2, 2).mean(axis=(1, 3)).round().astype(np.uint16)
    )
    return Layer(left // 2 * 2, top // 2 * 2, y.copy(), u.copy(), v.copy(), alpha, half)
