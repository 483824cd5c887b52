"""``ecommerce-video``: product images and a few lines of copy → a promo MP4 and a
thumbnail.

The video is exactly ``duration`` seconds: the products in turn (shown whole,
with Ken Burns motion and crossfades), the title, price and bullet points coming
in one after another over them, then an end card with the title, price and call
to action; the brand colour marks the accents. Frames are rendered a few ahead
and streamed into the encoder with the soundtrack (an uploaded file or composed
music, cut or looped and faded out). Progress follows the frames; a cancel
request is seen within a frame and leaves no file.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from taskgate.workflows.builtin.media.pipeline import make_video
from taskgate.workflows.builtin.media.promo import Promo, PromoText, parse_colour
from taskgate.workflows.builtin.media.video import FPS, Aspect, Resolution, frame_size
from taskgate.workflows.builtin.video_music import (
    PicturePricing,
    VideoMusic,
    soundtrack_for,
)
from taskgate.workflows.sdk import Context, Estimate, ImageRef, workflow

MAX_IMAGES = 10
MAX_TITLE_CHARS = 80
MAX_BULLETS = 5
MAX_BULLET_CHARS = 80
MAX_PRICE_CHARS = 24
MAX_CALL_CHARS = 40
PRICING = PicturePricing(
    video_credits_per_second=Decimal("0.02"),
    image_credits=Decimal("0.01"),
    work_per_second={"360p": 0.08, "720p": 0.35, "1080p": 0.8},
)
_PREPARED, _RENDERED = 2.0, 98.0  # percent done after each stage


# Lines of text: trimmed, not blank, bounded.
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TITLE_CHARS)
]
Price = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PRICE_CHARS)
]
Bullet = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_BULLET_CHARS)
]
CallToAction = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_CALL_CHARS)
]


class EcommerceVideoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_images: list[ImageRef] = Field(
        min_length=1,
        max_length=MAX_IMAGES,
        description="The product images, in order: uploaded image files (file_…) or http(s) URLs.",
    )
    title: Title = Field(description="The product's name, shown first and last.")
    price: Price | None = Field(
        default=None, description='The price as text, e.g. "€89" or "$19.99".'
    )
    bullet_points: list[Bullet] | None = Field(
        default=None, max_length=MAX_BULLETS, description="Selling points, shown one after another."
    )
    call_to_action: CallToAction | None = Field(
        default=None, description='The end card\'s button, e.g. "Shop now".'
    )
    brand_color: str | None = Field(
        default=None,
        pattern=r"^#[0-9a-fA-F]{6}$",
        description="The accent colour as #rrggbb (badges, bullets, the end card).",
    )
    aspect: Aspect = "9:16"
    resolution: Resolution = Field(default="720p", description="The short side of the frame.")
    duration: int = Field(default=15, ge=3, le=60, description="Seconds of video (whole seconds).")
    music: VideoMusic | None = Field(
        default=None, description="A soundtrack, cut or looped to the video and faded out."
    )


DEFAULT_ACCENT = "#e4572e"


def _estimate(value: EcommerceVideoInput) -> Estimate:
    return PRICING.estimate(
        value.duration, len(value.product_images), value.resolution, value.music
    )


@workflow(
    "ecommerce-video",
    input=EcommerceVideoInput,
    estimate=_estimate,
    price=PRICING.rates(),
    title="E-commerce video",
    description=(
        "Turns 1–10 product images and a title, price, bullet points and call to action "
        "into a promo MP4 (H.264 + AAC) with animated text, transitions, an end card in "
        "the brand colour and music, plus a JPEG thumbnail."
    ),
    timeout=3600,
)
def ecommerce_video(ctx: Context[EcommerceVideoInput]) -> dict[str, Any]:
    value = ctx.input
    width, height = frame_size(value.aspect, value.resolution)
    total = value.duration * FPS
    ctx.progress(0, "preparing", "images and text")
    promo = Promo(
        [ctx.file(ref) for ref in value.product_images],
        PromoText(
            title=value.title,
            price=value.price,
            bullets=list(value.bullet_points or []),
            call_to_action=value.call_to_action,
            accent=parse_colour(value.brand_color or DEFAULT_ACCENT),
        ),
        width=width,
        height=height,
        frames=total,
        fps=FPS,
    )
    audio = soundtrack_for(ctx, value.music, value.duration)
    ctx.check_cancelled()
    ctx.progress(_PREPARED, "rendering", f"0 of {total} frames")

    def after_frame(done: int) -> None:
        ctx.check_cancelled()
        percent = _PREPARED + (_RENDERED - _PREPARED) * done / total
        ctx.progress(percent, "rendering", f"{done} of {total} frames")

    video_path = ctx.output_file("promo.mp4", "video/mp4")
    thumbnail_path = ctx.output_file("thumbnail.jpg", "image/jpeg")
    make_video(
        video_path,
        thumbnail_path,
        width=width,
        height=height,
        frames=total,
        render=promo.frame,
        audio=audio,
        thumbnail_at=promo.thumbnail_at,
        after_frame=after_frame,
    )
    seconds = total / FPS
    ctx.usage(video_seconds=seconds, image_count=len(value.product_images))
    ctx.progress(100, "storing", "done")
    return {
        "type": "ecommerce_video",
        "video": video_path,
        "thumbnail": thumbnail_path,
        "duration": seconds,
        "width": width,
        "height": height,
        "fps": FPS,
        "images": len(value.product_images),
        "end_card_seconds": promo.end_frames / FPS,
        "audio": audio is not None,
    }
