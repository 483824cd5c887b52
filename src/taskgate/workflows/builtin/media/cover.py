"""Cover art: an abstract square image drawn from a seed and the track's words.

The palette comes from the words (their hash picks the hue) and the mood (minor
keys are darker, bright styles more saturated); the seed places soft glowing
shapes over a gradient and picks a motif (rings, bars or waves) drawn on top.
The same seed and words give the same pixels.
"""

from __future__ import annotations

import colorsys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from taskgate.workflows.builtin.media.compose import random_for

COVER_SIZE = 1024
RGB = tuple[int, int, int]


def _color(hue: float, saturation: float, value: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, min(1.0, saturation), min(1.0, value))
    return round(r * 255), round(g * 255), round(b * 255)


def _gradient(size: int, top: RGB, bottom: RGB, angle: float) -> Image.Image:
    axis = np.linspace(0.0, 1.0, size, dtype=np.float32)
    mix = np.clip(
        (np.cos(angle) * axis[None, :] + np.sin(angle) * axis[:, None]) / 1.42 + 0.15, 0, 1
    )
    start = np.array(top, dtype=np.float32)
    end = np.array(bottom, dtype=np.float32)
    pixels = start + (end - start) * mix[..., None]
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def draw_cover(seed: int, words: tuple[str, ...], *, minor: bool, brightness: float) -> Image.Image:
    """A COVER_SIZE² RGB image for a track."""
    rng = random_for(seed, *words, "cover")
    size = COVER_SIZE
    hue = zlib.crc32(" ".join(words).lower().encode()) % 360 / 360
    hue += float(rng.uniform(-0.05, 0.05))
    value = 0.45 if minor else 0.75
    saturation = 0.45 + 0.45 * brightness
    spread = float(rng.choice([0.08, 0.15, 0.33, 0.5]))
    image = _gradient(
        size,
        _color(hue, saturation, value * 0.55),
        _color(hue + spread, saturation * 0.9, value),
        float(rng.uniform(0, np.pi / 2)),
    )

    # Soft glows: blurred discs, screened over the gradient.
    for i in range(3):
        glow = Image.new("L", (size, size), 0)
        pen = ImageDraw.Draw(glow)
        for _ in range(int(rng.integers(2, 5))):
            x, y = rng.uniform(0, size, 2)
            r = float(rng.uniform(size * 0.08, size * 0.3))
            pen.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.integers(90, 200)))
        glow = glow.filter(ImageFilter.GaussianBlur(size / 14))
        tint = Image.new("RGB", (size, size), _color(hue + spread * (i - 1), saturation, 1.0))
        image = ImageChops.screen(image, ImageChops.multiply(tint, glow.convert("RGB")))

    # The motif, in a light ink.
    layer = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(layer)
    ink = int(rng.integers(150, 230))
    motif = int(rng.integers(3))
    cx, cy = (float(v) for v in rng.uniform(size * 0.3, size * 0.7, 2))
    if motif == 0:  # rings, like a record's grooves
        for r in np.cumsum(rng.uniform(12, 48, 14)):
            pen.ellipse(
                (cx - r, cy - r, cx + r, cy + r), outline=ink, width=int(rng.integers(2, 7))
            )
    elif motif == 1:  # equaliser bars
        bars = int(rng.integers(12, 28))
        width = size * 0.7 / bars
        heights = np.abs(np.cumsum(rng.normal(0, 0.25, bars))) + 0.2
        heights = heights / heights.max() * size * 0.45
        left = size * 0.15
        for i, h in enumerate(heights):
            x = left + i * width
            pen.rectangle((x, cy + 120 - h, x + width * 0.6, cy + 120), fill=ink)
    else:  # waves
        xs = np.linspace(0, size, 256)
        for k in range(int(rng.integers(4, 9))):
            phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(1.5, 4.0)
            amp = rng.uniform(20, 90)
            ys = cy + (k - 3) * 36 + amp * np.sin(2 * np.pi * freq * xs / size + phase)
            pen.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=ink, width=4)
    layer = layer.filter(ImageFilter.GaussianBlur(1.2))
    light = Image.new("RGB", (size, size), _color(hue + 0.5, 0.15, 1.0))
    return Image.composite(light, image, layer)


def save_png(image: Image.Image, path: Path) -> None:
    image.save(path, format="PNG", compress_level=6)
