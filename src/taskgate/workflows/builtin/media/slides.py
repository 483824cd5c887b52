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
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont, ImageOps

Transition = Literal["crossfade", "slide", "none"]
Pixels = NDArray[np.uint8]

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

    @property
    def total_frames(self) -> int:
        return self.frames_per_slide * self.count


def font(size: int) -> ImageFont.FreeTypeFont:
    """The bundled DejaVu Sans Bold (it covers é, €, —, Greek, Cyrillic…)."""
    path = resources.files("taskgate.workflows.builtin.media") / "fonts" / _FONT
    with resources.as_file(path) as local:
        return ImageFont.truetype(str(local), size)


def load_image(path: Path, width: int, height: int) -> Pixels:
    """An image file as RGB pixels of exactly ``width``×``height``: turned upright
    (EXIF), scaled to cover the size and centre-cropped to its aspect."""
    with Image.open(path) as opened:
        opened.draft("RGB", (width, height))  # JPEG: decode at a reduced scale
        image = ImageOps.exif_transpose(opened)
        if image.mode != "RGB":
            if "A" in image.getbands() or image.mode == "P":
                # Transparent parts show black, like a player's background.
                rgba = image.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (0, 0, 0))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                image = flat
            else:
                image = image.convert("RGB")
        src_w, src_h = image.size
        scale = max(width / src_w, height / src_h)
        crop_w, crop_h = min(src_w, width / scale), min(src_h, height / scale)
        left, top = max(0.0, (src_w - crop_w) / 2), max(0.0, (src_h - crop_h) / 2)
        fitted = image.resize(
            (width, height),
            Image.Resampling.BICUBIC,
            box=(left, top, min(src_w, left + crop_w), min(src_h, top + crop_h)),
            reducing_gap=3.0,
        )
        return np.asarray(fitted, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class Caption:
    """A caption drawn over the bottom band of the frame, in yuv420p planes."""

    top: int  # first row of the band (even)
    y: Pixels
    u: Pixels
    v: Pixels
    alpha: NDArray[np.uint16]  # 0..256, full size
    alpha_half: NDArray[np.uint16]  # 0..256, for the half-size chroma planes


def draw_caption(text: str, width: int, height: int) -> Caption:
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
    rgba = np.asarray(layer, dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba[..., :3]), format="rgb24")
    y, u, v = planes(_yuv(frame), width, band)
    alpha: NDArray[np.uint16] = ((rgba[..., 3].astype(np.uint16) * 256 + 127) // 255).astype(
        np.uint16
    )
    half = alpha.reshape(band // 2, 2, width // 2, 2).mean(axis=(1, 3)).astype(np.uint16)
    return Caption(top, y.copy(), u.copy(), v.copy(), alpha, half)


def planes(yuv: Pixels, width: int, height: int) -> tuple[Pixels, Pixels, Pixels]:
    """Views of the Y, U and V planes of a yuv420p array as PyAV lays it out."""
    flat = yuv.reshape(-1)
    luma = width * height
    chroma = luma // 4
    y = flat[:luma].reshape(height, width)
    u = flat[luma : luma + chroma].reshape(height // 2, width // 2)
    v = flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2)
    return y, u, v


def _blend(a: Pixels, b: Pixels, weight: int) -> Pixels:
    """``a`` towards ``b`` by weight/256."""
    mixed = a.astype(np.uint16) * np.uint16(256 - weight) + b.astype(np.uint16) * np.uint16(weight)
    out: Pixels = (mixed >> 8).astype(np.uint8)
    return out


def _over(base: Pixels, top: Pixels, alpha: NDArray[np.uint16]) -> None:
    """``top`` over ``base`` (in place), by alpha/256."""
    mixed = base.astype(np.uint16) * (256 - alpha) + top.astype(np.uint16) * alpha
    base[...] = (mixed >> 8).astype(np.uint8)


def _yuv(frame: av.VideoFrame) -> Pixels:
    """A frame as a yuv420p array, laid out as PyAV does (Y, then U, then V)."""
    array = frame.reformat(format="yuv420p").to_ndarray()
    return array.astype(np.uint8, copy=False)


def _array(view: av.VideoFrame | Pixels) -> Pixels:
    return _yuv(view) if isinstance(view, av.VideoFrame) else view


def _ease(x: float) -> float:
    return x * x * (3 - 2 * x)


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
        self._captions: dict[int, Caption | None] = {}

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
        pixels = load_image(self.paths[index], *self._source_size)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        return _yuv(frame)

    def _caption(self, index: int) -> Caption | None:
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
        return picture.reformat(layout.width, layout.height, interpolation="BILINEAR")

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
            amount = _ease((into + 1) / (layout.transition_frames + 1))
            following = _array(self._view(index + 1, k))
            if layout.transition == "crossfade":
                current = _blend(current, following, round(amount * 256))
            else:
                current = self._slide(current, following, amount)
            captions.append(self._caption(index + 1))
        elif current is view:
            current = current.copy()  # the cached still is not drawn on
        for caption, weight in zip(captions, (1.0 - amount, amount), strict=False):
            if caption is not None and weight > 0:
                self._overlay(current, caption, weight)
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

    def _overlay(self, yuv: Pixels, caption: Caption, weight: float) -> None:
        width, height = self.layout.width, self.layout.height
        y, u, v = planes(yuv, width, height)
        band = caption.y.shape[0]
        top = caption.top
        scale = round(weight * 256)
        alpha, half = caption.alpha, caption.alpha_half
        if scale < 256:
            alpha = ((alpha * scale) >> 8).astype(np.uint16)
            half = ((half * scale) >> 8).astype(np.uint16)
        _over(y[top : top + band], caption.y, alpha)
        _over(u[top // 2 : (top + band) // 2], caption.u, half)
        _over(v[top // 2 : (top + band) // 2], caption.v, half)
