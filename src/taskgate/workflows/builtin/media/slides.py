"""Slides: the frames of a slideshow, each rendered on its own from its index.

Every image owns a slot of ``frames_per_slide`` frames. Ken Burns moves a crop
window (zooming in or out, panning) across a source prepared a little larger than
the frame; swscale resizes the crop and converts it to yuv420p in one step. A
transition takes the last frames of a slot, so the video is exactly images × slot
long and the middle of every slot shows its image alone. Crossfades and slides
are done on the yuv planes in numpy; captions are drawn once per image with
Pillow and laid over the bottom of the frame.

:meth:`Slides.frame` may be called from several threads at once (frames are
rendered ahead of the encoder); at most three prepared images are held.
"""

from __future__ import annotations

import textwrap
import threading
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from taskgate.workflows.builtin.media.layers import (
    Layer,
    Pixels,
    blend,
    ease,
    layer_of,
    planes,
    to_yuv,
)

Transition = Literal["crossfade", "slide", "none"]
#: How an image fills the frame: ``cover`` crops it to the frame's aspect;
#: ``contain`` shows it whole over a blurred, darkened copy of itself.
Fit = Literal["cover", "contain"]

#: How far Ken Burns zooms: the crop window's side shrinks by this factor.
ZOOM = 1.12
#: (zoom in?, pan start, pan end), as fractions of the room the crop leaves; the
#: images take the moves in turn.
MOVES = (
    (True, (0.5, 0.5), (0.5, 0.35)),
    (False, (0.25, 0.5), (0.7, 0.5)),
    (True, (0.7, 0.65), (0.35, 0.4)),
    (False, (0.5, 0.3), (0.5, 0.65)),
)
CACHED_IMAGES = 3
_FONT = "DejaVuSans-Bold.ttf"


def transition_frames(seconds_per_image: float, fps: int, transition: Transition) -> int:
    """Frames a transition takes from the end of a slot: a second, or a quarter
    of a short slot."""
    if transition == "none":
        return 0
    return round(min(1.0, seconds_per_image / 4) * fps)


@dataclass(frozen=True, slots=True)
class Layout:
    width: int
    height: int
    frames_per_slide: int
    count: int
    transition: Transition = "crossfade"
    transition_frames: int = 0
    ken_burns: bool = True
    fit: Fit = "cover"

    @property
    def total_frames(self) -> int:
        return self.frames_per_slide * self.count


def font(size: int) -> ImageFont.FreeTypeFont:
    """The bundled DejaVu Sans Bold (it covers é, €, —, Greek, Cyrillic…)."""
    path = resources.files("taskgate.workflows.builtin.media") / "fonts" / _FONT
    with resources.as_file(path) as local:
        return ImageFont.truetype(str(local), size)


def load_image(path: Path, width: int, height: int, fit: Fit = "cover") -> Pixels:
    """An image file as RGB pixels of exactly ``width``×``height``, turned upright
    (EXIF): scaled to cover the size and centre-cropped to its aspect, or (with
    ``fit="contain"``) scaled to fit inside it over a blurred, darkened cover."""
    with Image.open(path) as opened:
        opened.draft("RGB", (width, height))  # JPEG: decode at a reduced scale
        image = _rgb(ImageOps.exif_transpose(opened))
        if fit == "cover":
            return np.asarray(_cover(image, width, height), dtype=np.uint8)
        src_w, src_h = image.size
        scale = min(width / src_w, height / src_h)
        inner = (max(2, round(src_w * scale)), max(2, round(src_h * scale)))
        fitted = image.resize(inner, Image.Resampling.BICUBIC, reducing_gap=3.0)
        # The backdrop is blurred at an eighth of the size and scaled back up: the
        # same look as blurring at full size, for a fraction of the work.
        small = _cover(image, max(2, width // 8), max(2, height // 8))
        small = small.filter(ImageFilter.BoxBlur(2))
        small = Image.eval(small, lambda level: level * 45 // 100)
        backdrop = small.resize((width, height), Image.Resampling.BILINEAR)
        backdrop.paste(fitted, ((width - inner[0]) // 2, (height - inner[1]) // 2))
        return np.asarray(backdrop, dtype=np.uint8)


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.mode == "P":
        # Transparent parts show black, like a player's background.
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (0, 0, 0))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` scaled to cover width×height, centre-cropped to it."""
    src_w, src_h = image.size
    scale = max(width / src_w, height / src_h)
    crop_w, crop_h = min(src_w, width / scale), min(src_h, height / scale)
    left, top = max(0.0, (src_w - crop_w) / 2), max(0.0, (src_h - crop_h) / 2)
    return image.resize(
        (width, height),
        Image.Resampling.BICUBIC,
        box=(left, top, min(src_w, left + crop_w), min(src_h, top + crop_h)),
        reducing_gap=3.0,
    )


def draw_caption(text: str, width: int, height: int) -> Layer:
    """White text on a dark translucent band, wrapped to the frame's width."""
    short = min(width, height)
    size = max(12, round(short * 0.055))
    face = font(size)
    chars = max(8, int(width * 0.9 / (size * 0.6)))
    lines = textwrap.wrap(text, chars)[:3] or [""]
    line_height = round(size * 1.3)
    pad = round(size * 0.6)
    band = (len(lines) * line_height + 2 * pad + 1) // 2 * 2
    bottom_gap = round(short * 0.05) // 2 * 2
    top = max(0, height - band - bottom_gap)
    layer = Image.new("RGBA", (width, band), (0, 0, 0, 0))
    pen = ImageDraw.Draw(layer)
    widest = max(pen.textlength(line, font=face) for line in lines)
    box_w = min(width, widest + 2 * pad)
    left = (width - box_w) / 2
    pen.rounded_rectangle((left, 0, left + box_w, band - 1), radius=pad, fill=(0, 0, 0, 150))
    for row, line in enumerate(lines):
        pen.text(
            (width / 2, pad + row * line_height + line_height / 2),
            line,
            font=face,
            fill=(255, 255, 255, 255),
            anchor="mm",
        )
    return layer_of(layer, 0, top)


def _array(view: av.VideoFrame | Pixels) -> Pixels:
    return to_yuv(view) if isinstance(view, av.VideoFrame) else view


class Slides:
    """Renders frame ``k`` of a slideshow of ``paths`` as a yuv420p frame."""

    def __init__(
        self, paths: list[Path], layout: Layout, captions: list[str | None] | None = None
    ) -> None:
        if len(paths) != layout.count:
            raise ValueError("one path per slide")
        self.paths = paths
        self.layout = layout
        scale = ZOOM if layout.ken_burns else 1.0
        self._source_size = (
            round(layout.width * scale / 2) * 2,
            round(layout.height * scale / 2) * 2,
        )
        self._captions_text = captions or []
        self._lock = threading.Lock()
        self._images: OrderedDict[int, Pixels] = OrderedDict()
        self._captions: dict[int, Layer | None] = {}

    # -- prepared parts, made once and shared between threads --------------------------

    def _image(self, index: int) -> Pixels:
        with self._lock:
            found = self._images.get(index)
            if found is None:
                found = self._prepare(index)
                self._images[index] = found
                while len(self._images) > CACHED_IMAGES:
                    self._images.popitem(last=False)
            else:
                self._images.move_to_end(index)
            return found

    def _prepare(self, index: int) -> Pixels:
        """Image ``index`` fitted to the source size, as a yuv420p array: converted
        once, so each frame only crops and scales planes."""
        pixels = load_image(self.paths[index], *self._source_size, fit=self.layout.fit)
        return to_yuv(av.VideoFrame.from_ndarray(pixels, format="rgb24"))

    def _caption(self, index: int) -> Layer | None:
        with self._lock:
            if index not in self._captions:
                text = self._captions_text[index] if index < len(self._captions_text) else None
                self._captions[index] = (
                    draw_caption(text, self.layout.width, self.layout.height)
                    if text and text.strip()
                    else None
                )
            return self._captions[index]

    # -- frames ---------------------------------------------------------------------

    def _view(self, index: int, frame: int) -> av.VideoFrame | Pixels:
        """Image ``index`` at global frame ``frame``: a yuv420p frame, or (a still
        slide) the cached yuv420p array, which must not be drawn on."""
        layout = self.layout
        source = self._image(index)
        if not layout.ken_burns:
            return source
        span = layout.frames_per_slide + layout.transition_frames
        start = index * layout.frames_per_slide - layout.transition_frames
        progress = min(1.0, max(0.0, (frame - start) / max(1, span - 1)))
        zoom_in, (x0, y0), (x1, y1) = MOVES[index % len(MOVES)]
        amount = progress if zoom_in else 1.0 - progress
        zoom = 1.0 + (ZOOM - 1.0) * amount
        src_w, src_h = self._source_size
        crop_w = min(src_w, round(src_w / zoom))
        crop_h = min(src_h, round(src_h / zoom))
        fx = x0 + (x1 - x0) * progress
        fy = y0 + (y1 - y0) * progress
        # The chroma planes are half size: the crop's corner and sides are even.
        crop_w, crop_h = crop_w // 2 * 2, crop_h // 2 * 2
        left = round(fx * (src_w - crop_w) / 2)
        top = round(fy * (src_h - crop_h) / 2)
        y, u, v = planes(source, src_w, src_h)
        picture = av.VideoFrame(crop_w, crop_h, "yuv420p")
        crops = (
            y[2 * top : 2 * top + crop_h, 2 * left : 2 * left + crop_w],
            u[top : top + crop_h // 2, left : left + crop_w // 2],
            v[top : top + crop_h // 2, left : left + crop_w // 2],
        )
        for plane, crop in zip(picture.planes, crops, strict=True):
            # Straight into the frame's buffers (rows padded to line_size): one copy.
            rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
            rows[: crop.shape[0], : crop.shape[1]] = crop
        # swscale on the planes: three times cheaper than scaling RGB and converting.
        return picture.reformat(layout.width, layout.height, interpolation="FAST_BILINEAR")

    def frame(self, k: int) -> av.VideoFrame:
        layout = self.layout
        index, local = divmod(k, layout.frames_per_slide)
        into = local - (layout.frames_per_slide - layout.transition_frames)
        moving = layout.transition_frames > 0 and index + 1 < layout.count and into >= 0
        view = self._view(index, k)
        captions = [self._caption(index)]
        if not moving and captions[0] is None:
            if isinstance(view, av.VideoFrame):
                return view  # the common case: no copy into numpy and back
            return av.VideoFrame.from_ndarray(view, format="yuv420p")
        current = _array(view)
        amount = 0.0
        if moving:
            amount = ease((into + 1) / (layout.transition_frames + 1))
            following = _array(self._view(index + 1, k))
            if layout.transition == "crossfade":
                current = blend(current, following, round(amount * 256))
            else:
                current = self._slide(current, following, amount)
            captions.append(self._caption(index + 1))
        elif current is view:
            current = current.copy()  # the cached still is not drawn on
        for caption, weight in zip(captions, (1.0 - amount, amount), strict=False):
            if caption is not None and weight > 0:
                caption.draw(current, layout.width, layout.height, weight=weight)
        return av.VideoFrame.from_ndarray(current, format="yuv420p")

    def _slide(self, leaving: Pixels, coming: Pixels, amount: float) -> Pixels:
        """The next image pushes the current one out to the left."""
        width, height = self.layout.width, self.layout.height
        shift = min(width, round(width * amount / 2) * 2)
        out = np.empty_like(leaving)
        for out_plane, a, b in zip(
            planes(out, width, height),
            planes(leaving, width, height),
            planes(coming, width, height),
            strict=True,
        ):
            s = shift * out_plane.shape[1] // width
            keep = out_plane.shape[1] - s
            out_plane[:, :keep] = a[:, s:]
            out_plane[:, keep:] = b[:, :s]
        return out
