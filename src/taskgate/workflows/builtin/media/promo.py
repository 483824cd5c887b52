"""Promo frames: product images with motion and crossfades, text that comes in
line by line, and an end card.

The body of the video is a slideshow of the products (each shown whole over a
blurred copy of itself, with Ken Burns motion and crossfades); over it the title
rises in, then the price on a badge in the brand colour, then the bullet points
one after another. The last seconds are an end card on a brand-tinted
background: the first product, the title, the price and the call to action on a
brand-colour button, each rising in in turn. The body crossfades into the card.

Every piece of text is drawn once with Pillow (the bundled font covers é, €, —…)
as a layer; a frame only lays the layers over its picture with the weight and
offset of that moment. :meth:`Promo.frame` may be called from several threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from taskgate.workflows.builtin.media.layers import (
    Layer,
    Pixels,
    blend,
    ease,
    layer_of,
    rgb_to_yuv,
    to_yuv,
)
from taskgate.workflows.builtin.media.slides import (
    Layout,
    Slides,
    font,
    load_image,
    transition_frames,
)

RGB = tuple[int, int, int]
WHITE: RGB = (255, 255, 255)
INK: RGB = (20, 20, 24)
#: Seconds of the end card: a fifth of the video, within these bounds.
END_CARD_SECONDS = (1.0, 3.0)


def parse_colour(text: str) -> RGB:
    """``#rrggbb`` as an RGB triple."""
    value = int(text.lstrip("#"), 16)
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def _luma(colour: RGB) -> float:
    r, g, b = colour
    return 0.299 * r + 0.587 * g + 0.114 * b


def accent_light(colour: RGB) -> RGB:
    """The brand colour for text on the dark card: as it is, or lifted towards
    white when it is too dark to read there."""
    if _luma(colour) >= 90:
        return colour
    r, g, b = colour
    return (r + 2 * 255) // 3, (g + 2 * 255) // 3, (b + 2 * 255) // 3


def _on(colour: RGB) -> RGB:
    """Text colour that reads on ``colour``: white on dark, ink on light."""
    return INK if _luma(colour) > 160 else WHITE


@dataclass(frozen=True, slots=True)
class PromoText:
    title: str
    price: str | None = None
    bullets: list[str] = field(default_factory=list)
    call_to_action: str | None = None
    accent: RGB = (228, 87, 46)


def wrap(text: str, face: ImageFont.FreeTypeFont, width: float, lines: int) -> list[str]:
    """``text`` broken into at most ``lines`` lines no wider than ``width`` pixels:
    at spaces, or inside a word too long for a line; what does not fit ends in …"""
    out: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if face.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            out.append(current)
        current = ""
        for char in word:  # a word wider than a line is broken where it must be
            if current and face.getlength(current + char) > width:
                out.append(current)
                current = ""
            current += char
    if current:
        out.append(current)
    if len(out) > lines:
        last = out[lines - 1]
        while last and face.getlength(last + "…") > width:
            last = last[:-1]
        out = [*out[: lines - 1], last.rstrip() + "…"]
    return out or [""]


def fitting(text: str, size: int, width: float, smallest: int = 11) -> ImageFont.FreeTypeFont:
    """The bundled font at ``size``, or smaller (down to ``smallest``) until ``text``
    fits on one line ``width`` pixels wide."""
    face = font(size)
    while size > smallest and face.getlength(text) > width:
        size = max(smallest, int(size * width / face.getlength(text)))
        face = font(size)
    return face


def _text_block(
    lines: list[str],
    face: ImageFont.FreeTypeFont,
    *,
    fill: RGB,
    stroke: int = 0,
    pad: tuple[int, int] = (0, 0),
    box: tuple[int, int, int, int] | None = None,
    radius: int = 0,
    width: int | None = None,
    centred: bool = True,
) -> Image.Image:
    """Lines of text (centred, or flush left) on a transparent picture, on a
    rounded ``box`` (RGBA) if one is given; ``width`` fixes the picture's width."""
    size = face.size
    line_height = round(size * 1.25)
    pen = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    widest = max(pen.textlength(line, font=face) for line in lines)
    w = width or math.ceil(widest + 2 * pad[0] + 2 * stroke)
    h = len(lines) * line_height + 2 * pad[1] + 2 * stroke
    picture = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    pen = ImageDraw.Draw(picture)
    if box is not None:
        inner = min(w, math.ceil(widest + 2 * pad[0]))
        left = (w - inner) / 2
        pen.rounded_rectangle((left, 0, left + inner - 1, h - 1), radius=radius, fill=box)
    for row, line in enumerate(lines):
        pen.text(
            (
                w / 2 if centred else pad[0] + stroke,
                pad[1] + stroke + row * line_height + line_height / 2,
            ),
            line,
            font=face,
            fill=(*fill, 255),
            anchor="mm" if centred else "lm",
            stroke_width=stroke,
            stroke_fill=(0, 0, 0, 200),
        )
    return picture


@dataclass(frozen=True, slots=True)
class Entrance:
    """A layer that rises (or slides) in from ``at`` over ``frames`` frames."""

    layer: Layer
    at: int
    frames: int
    dx: int = 0  # offset at the start of the entrance, in pixels
    dy: int = 0

    def draw(self, yuv: Pixels, width: int, height: int, k: int) -> None:
        if k < self.at:
            return
        t = ease((k - self.at + 1) / max(1, self.frames))
        self.layer.draw(
            yuv,
            width,
            height,
            weight=t,
            dx=round(self.dx * (1 - t)),
            dy=round(self.dy * (1 - t)),
        )


class Promo:
    """Renders frame ``k`` of a promo of ``frames`` frames as a yuv420p frame."""

    def __init__(
        self,
        paths: list[Path],
        text: PromoText,
        *,
        width: int,
        height: int,
        frames: int,
        fps: int,
    ) -> None:
        self.width, self.height, self.frames, self.fps = width, height, frames, fps
        self.text = text
        low, high = END_CARD_SECONDS
        self.end_frames = round(min(high, max(low, 0.2 * frames / fps)) * fps)
        self.body_frames = frames - self.end_frames
        #: Frames over which the body crossfades into the end card.
        self.fade_frames = min(round(0.5 * fps), self.end_frames // 2)
        per_slide = math.ceil(self.body_frames / len(paths))
        layout = Layout(
            width=width,
            height=height,
            frames_per_slide=per_slide,
            count=len(paths),
            transition="crossfade",
            transition_frames=transition_frames(per_slide / fps, fps, "crossfade"),
            ken_burns=True,
            fit="contain",
        )
        self._slides = Slides(paths, layout)
        self._short = min(width, height)
        self._body = self._body_entrances()
        self._card, self._card_entrances = self._end_card(paths[0])

    # -- the timeline -----------------------------------------------------------------

    @property
    def thumbnail_at(self) -> int:
        """A body frame where the title and price stand."""
        shown = [e.at + e.frames for e in self._body[:2]]
        return min(self.body_frames - self.fade_frames - 1, max(shown, default=0))

    def _body_entrances(self) -> list[Entrance]:
        width, height, short, fps = self.width, self.height, self._short, self.fps
        body = self.body_frames - self.fade_frames
        rise = max(4, min(round(0.4 * fps), body // 8))
        step = max(1, min(round(0.6 * fps), body // 8))
        accent = self.text.accent
        entrances: list[Entrance] = []

        title_face = font(max(12, round(short * 0.075)))
        title_lines = wrap(self.text.title, title_face, width * 0.86, 2)
        title = _text_block(title_lines, title_face, fill=WHITE, stroke=max(1, short // 180))
        bar = max(2, round(short * 0.012))
        banner = Image.new("RGBA", (title.width, title.height + 2 * bar), (0, 0, 0, 0))
        banner.paste(title, (0, 0))
        bar_w = min(title.width, round(short * 0.25))
        ImageDraw.Draw(banner).rectangle(
            (
                (title.width - bar_w) // 2,
                title.height + bar // 2,
                (title.width + bar_w) // 2,
                title.height + bar + bar // 2,
            ),
            fill=(*accent, 255),
        )
        top = round(height * 0.07)
        at = min(round(0.3 * fps), body // 10)
        entrances.append(
            Entrance(
                layer_of(banner, (width - banner.width) // 2, top), at, rise, dy=round(short * 0.06)
            )
        )
        below = top + banner.height + round(short * 0.03)

        if self.text.price:
            face = fitting(self.text.price, max(12, round(short * 0.07)), width * 0.8)
            pad = (round(face.size * 0.6), round(face.size * 0.2))
            badge = _text_block(
                wrap(self.text.price, face, width * 0.8, 1),
                face,
                fill=_on(accent),
                pad=pad,
                box=(*accent, 255),
                radius=pad[0],
            )
            at += step
            entrances.append(
                Entrance(
                    layer_of(badge, (width - badge.width) // 2, below),
                    at,
                    rise,
                    dy=round(short * 0.04),
                )
            )
            below += badge.height
        if self.text.bullets:
            room = round(height * 0.92) - below - round(short * 0.03)
            entrances += self._bullets(at + step, body, rise, room)
        return entrances

    def _bullets(self, start: int, body: int, rise: int, room: int) -> list[Entrance]:
        """The bullet points stacked above the bottom, each coming in from the left
        in turn. The stack takes at most 40 % of the height and ``room`` pixels:
        the type shrinks, then each point keeps one line, until it fits."""
        width, height, short = self.width, self.height, self._short
        bullets = self.text.bullets
        most = min(height * 0.4, room)
        largest = max(12, round(short * 0.05))
        tries = [(size, 2) for size in range(largest, 10, -2)] + [(11, 1)]
        for size, line_count in tries:
            face = font(size)
            dot = round(size * 0.45)
            pad = (round(size * 0.5), round(size * 0.25))
            blocks = []
            for line in bullets:
                lines = wrap(line, face, width * 0.8 - dot - 2 * pad[0], line_count)
                text = _text_block(lines, face, fill=WHITE, centred=False)
                block = Image.new(
                    "RGBA",
                    (text.width + dot + 3 * pad[0], text.height + 2 * pad[1]),
                    (0, 0, 0, 0),
                )
                pen = ImageDraw.Draw(block)
                pen.rounded_rectangle(
                    (0, 0, block.width - 1, block.height - 1), radius=pad[0], fill=(0, 0, 0, 160)
                )
                middle = pad[1] + round(size * 1.25) / 2
                pen.ellipse(
                    (pad[0], middle - dot / 2, pad[0] + dot, middle + dot / 2),
                    fill=(*self.text.accent, 255),
                )
                block.alpha_composite(text, (2 * pad[0] + dot, pad[1]))
                blocks.append(block)
            gap = round(size * 0.35)
            stack = sum(b.height for b in blocks) + gap * (len(blocks) - 1)
            if stack <= most:
                break
        spacing = max(1, (body - rise - start) // len(blocks))
        y = round(height * 0.92) - stack
        entrances = []
        for i, block in enumerate(blocks):
            left = round(width * 0.1)
            entrances.append(
                Entrance(
                    layer_of(block, left, y), start + i * spacing, rise, dx=-round(width * 0.12)
                )
            )
            y += block.height + gap
        return entrances

    def _end_card(self, first: Path) -> tuple[Pixels, list[Entrance]]:
        """The card's still background (a brand-tinted gradient and the first
        product) and the entrances of its text."""
        width, height, short, fps = self.width, self.height, self._short, self.fps
        accent = self.text.accent
        down = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
        tint = np.array(accent, dtype=np.float32)
        rows = tint * (0.32 - 0.22 * down) + 10.0
        background = Image.fromarray(np.repeat(rows, width, axis=1).astype(np.uint8), "RGB")

        side = round(min(width * 0.62, height * 0.4)) // 2 * 2
        title_face = font(max(12, round(short * 0.07)))
        title_lines = wrap(self.text.title, title_face, width * 0.86, 2)
        title = _text_block(title_lines, title_face, fill=WHITE)
        parts: list[Image.Image] = [title]
        if self.text.price:
            face = fitting(self.text.price, max(12, round(short * 0.065)), width * 0.86)
            lines = wrap(self.text.price, face, width * 0.86, 1)
            parts.append(_text_block(lines, face, fill=accent_light(accent)))
        if self.text.call_to_action:
            face = font(max(12, round(short * 0.055)))
            lines = wrap(self.text.call_to_action, face, width * 0.7, 1)
            pad = (round(face.size * 1.1), round(face.size * 0.45))
            parts.append(
                _text_block(
                    lines, face, fill=_on(accent), pad=pad, box=(*accent, 255), radius=pad[1] * 2
                )
            )
        gap = round(short * 0.04)
        stack = side + sum(gap + part.height for part in parts)
        y = max(0, (height - stack) // 2)
        product = load_image(first, side, side, fit="contain")
        background.paste(Image.fromarray(product, "RGB"), ((width - side) // 2, y))
        # A brand-colour frame around the product.
        line = max(2, round(short * 0.008))
        ImageDraw.Draw(background).rectangle(
            (
                (width - side) // 2 - line,
                y - line,
                (width + side) // 2 + line - 1,
                y + side + line - 1,
            ),
            outline=accent,
            width=line,
        )
        y += side + gap
        at = self.fade_frames // 2
        step = max(1, min(round(0.3 * fps), self.end_frames // 4))
        rise = max(3, step)
        entrances = []
        for part in parts:
            entrances.append(
                Entrance(
                    layer_of(part, (width - part.width) // 2, y), at, rise, dy=round(short * 0.05)
                )
            )
            at += step
            y += part.height + gap
        return rgb_to_yuv(np.asarray(background, dtype=np.uint8)), entrances

    # -- frames ---------------------------------------------------------------------

    def _card_frame(self, local: int) -> Pixels:
        yuv = self._card.copy()
        for entrance in self._card_entrances:
            entrance.draw(yuv, self.width, self.height, local)
        return yuv

    def frame(self, k: int) -> av.VideoFrame:
        card_from = self.body_frames - self.fade_frames
        if k >= self.body_frames:
            return av.VideoFrame.from_ndarray(self._card_frame(k - card_from), format="yuv420p")
        yuv = to_yuv(self._slides.frame(k))
        if not yuv.flags.writeable:
            yuv = yuv.copy()
        for entrance in self._body:
            entrance.draw(yuv, self.width, self.height, k)
        if k >= card_from:
            amount = ease((k - card_from + 1) / (self.fade_frames + 1))
            yuv = blend(yuv, self._card_frame(k - card_from), round(amount * 256))
        return av.VideoFrame.from_ndarray(yuv, format="yuv420p")
