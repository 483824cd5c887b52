"""``slideshow``: images → an MP4 with Ken Burns motion, transitions, captions and
music, plus a thumbnail.

The video is exactly images × seconds_per_image long (transitions overlap the end
of each slot). Frames are rendered a few ahead on two threads and streamed into the
encoder one by one, with the soundtrack (an uploaded file, or music composed in
the same process) cut or looped to the video's length and faded out. Progress
follows the frames; a cancel request is seen within a frame and leaves no file.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from taskgate.workflows.builtin.media.pipeline import make_video
from taskgate.workflows.builtin.media.slides import Layout, Slides, Transition, transition_frames
from taskgate.workflows.builtin.media.video import (
    FPS,
    Aspect,
    Resolution,
    frame_size,
)
from taskgate.workflows.builtin.video_music import (
    PicturePricing,
    VideoMusic,
    soundtrack_for,
)
from taskgate.workflows.sdk import Context, Estimate, ImageRef, workflow

MAX_IMAGES = 50
MAX_CAPTION_CHARS = 200
PRICING = PicturePricing(
    video_credits_per_second=Decimal("0.01"),
    image_credits=Decimal("0.01"),
    work_per_second={"360p": 0.06, "720p": 0.3, "1080p": 0.7},
)
_PREPARED, _RENDERED = 2.0, 98.0  # percent done after each stage


class SlideshowInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[ImageRef] = Field(
        min_length=1,
        max_length=MAX_IMAGES,
        description="The images, in order: uploaded image files (file_…) or http(s) URLs.",
    )
    seconds_per_image: int = Field(
        default=3, ge=1, le=20, description="Seconds each image is shown (whole seconds)."
    )
    transition: Transition = Field(
        default="crossfade", description="How one image gives way to the next."
    )
    ken_burns: bool = Field(default=True, description="Slow zoom and pan over each image.")
    aspect: Aspect = "16:9"
    resolution: Resolution = Field(default="720p", description="The short side of the frame.")
    music: VideoMusic | None = Field(
        default=None, description="A soundtrack, cut or looped to the video and faded out."
    )
    captions: list[Annotated[str, Field(max_length=MAX_CAPTION_CHARS)] | None] | None = Field(
        default=None,
        max_length=MAX_IMAGES,
        description="A caption per image (null or empty for none), at the bottom.",
    )

    @field_validator("captions")
    @classmethod
    def _captions(cls, value: list[str | None] | None, info: ValidationInfo) -> Any:
        images = info.data.get("images")
        if value is not None and images is not None and len(value) > len(images):
            raise ValueError("at most one caption per image")
        return value

    @property
    def seconds(self) -> int:
        return len(self.images) * self.seconds_per_image


def _estimate(value: SlideshowInput) -> Estimate:
    return PRICING.estimate(value.seconds, len(value.images), value.resolution, value.music)


@workflow(
    "slideshow",
    input=SlideshowInput,
    estimate=_estimate,
    price=PRICING.rates(),
    title="Slideshow",
    description=(
        "Turns 1–50 images into an MP4 (H.264 + AAC) with Ken Burns motion, crossfade or "
        "slide transitions, captions and music, plus a JPEG thumbnail."
    ),
    timeout=3600,
)
def slideshow(ctx: Context[SlideshowInput]) -> dict[str, Any]:
    value = ctx.input
    width, height = frame_size(value.aspect, value.resolution)
    per_slide = value.seconds_per_image * FPS
    layout = Layout(
        width=width,
        height=height,
        frames_per_slide=per_slide,
        count=len(value.images),
        transition=value.transition,
        transition_frames=transition_frames(value.seconds_per_image, FPS, value.transition),
        ken_burns=value.ken_burns,
    )
    slides = Slides([ctx.file(ref) for ref in value.images], layout, value.captions)
    audio = soundtrack_for(ctx, value.music, value.seconds)
    ctx.check_cancelled()
    ctx.progress(_PREPARED, "rendering", f"0 of {layout.total_frames} frames")

    video_path = ctx.output_file("slideshow.mp4", "video/mp4")
    thumbnail_path = ctx.output_file("thumbnail.jpg", "image/jpeg")
    total = layout.total_frames

    def after_frame(done: int) -> None:
        ctx.check_cancelled()
        percent = _PREPARED + (_RENDERED - _PREPARED) * done / total
        ctx.progress(percent, "rendering", f"{done} of {total} frames")

    make_video(
        video_path,
        thumbnail_path,
        width=width,
        height=height,
        frames=total,
        render=slides.frame,
        audio=audio,
        thumbnail_at=per_slide // 2,
        after_frame=after_frame,
    )
    seconds = total / FPS
    ctx.usage(video_seconds=seconds, image_count=len(value.images))
    ctx.progress(100, "storing", "done")
    return {
        "type": "slideshow",
        "video": video_path,
        "thumbnail": thumbnail_path,
        "duration": seconds,
        "width": width,
        "height": height,
        "fps": FPS,
        "images": len(value.images),
        "audio": audio is not None,
    }
