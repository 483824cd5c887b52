"""``music-video``: an audio-reactive MP4 of a track, as long as the track.

The audio (an uploaded file, or a track of an earlier ``music`` task) is listened
to first, block by block: per frame, the spectrum's bands and the waveform. Then
the frames are drawn from those numbers over a background (the given images,
darkened, or a gradient) with the title, and encoded with the audio muxed in.
Progress follows the samples heard, then the frames; a cancel request is seen
within a block or a frame and leaves no file.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from taskgate.workflows.builtin.media.listen import listen
from taskgate.workflows.builtin.media.pipeline import make_video
from taskgate.workflows.builtin.media.soundtrack import SAMPLE_RATE, Decoded, Fitted, Limited
from taskgate.workflows.builtin.media.video import FPS, Aspect, Resolution, frame_size
from taskgate.workflows.builtin.media.visualizer import Style, Visualizer
from taskgate.workflows.sdk import (
    AudioRef,
    Context,
    Estimate,
    FileKind,
    ImageRef,
    Rate,
    Rates,
    TaskOutput,
    workflow,
)

MAX_SECONDS = 300
MAX_BACKGROUNDS = 10
MAX_TITLE_CHARS = 100
CREDITS_PER_SECOND = Decimal("0.01")
#: Seconds of work per second of video, for the estimate (measured on 2 cores,
#: with margin).
WORK_PER_SECOND: dict[str, float] = {"360p": 0.05, "720p": 0.2, "1080p": 0.45}
_LISTENED, _RENDERED = 10.0, 99.0  # percent done after each stage

_FILE_ID = re.compile(r"file_[0-9A-HJKMNP-TV-Z]{26}")
_TASK_ID = re.compile(r"task_[0-9A-HJKMNP-TV-Z]{26}")


def _audio(value: object) -> object:
    """``task_…`` → ``{task_id}``; anything that is neither a file ref nor a task
    output is refused here, so that the error names the field itself."""
    if isinstance(value, str):
        if _TASK_ID.fullmatch(value):
            return {"task_id": value, "index": 0}
        if _FILE_ID.fullmatch(value) or value.startswith(("http://", "https://")):
            return value
        raise ValueError(
            "a file id (file_…), an http(s) URL, a task id (task_…) or {task_id, index}"
        )
    if isinstance(value, dict):
        try:
            TaskOutput.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{where}: {first['msg']}" if where else first["msg"]) from None
        return value
    raise ValueError("a file id (file_…), an http(s) URL, a task id (task_…) or {task_id, index}")


AudioInput = Annotated[
    AudioRef | Annotated[TaskOutput, FileKind("audio")],
    BeforeValidator(_audio),
]


class MusicVideoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audio: AudioInput = Field(
        description=(
            "The track: an audio file (file_… or an http(s) URL), a completed music task "
            "(task_…: its first track), or {task_id, index} (index from 0)."
        )
    )
    style: Style = Field(
        default="spectrum",
        description="Spectrum bars, a waveform, or particles thrown out with the beat.",
    )
    background_images: list[ImageRef] | None = Field(
        default=None,
        max_length=MAX_BACKGROUNDS,
        description="Images shown behind the visuals, darkened, in turn.",
    )
    title: str | None = Field(default=None, max_length=MAX_TITLE_CHARS)
    aspect: Aspect = "16:9"
    resolution: Resolution = Field(default="720p", description="The short side of the frame.")


def _estimate(value: MusicVideoInput) -> Estimate:
    # The track's length is known only once it is read: reserve for the longest.
    return Estimate(
        credits=CREDITS_PER_SECOND * MAX_SECONDS,
        seconds=2.0 + WORK_PER_SECOND[value.resolution] * 60,
    )


@workflow(
    "music-video",
    input=MusicVideoInput,
    estimate=_estimate,
    price=Rates(video_seconds=Rate("second", CREDITS_PER_SECOND)),
    title="Music video",
    description=(
        "An audio-reactive MP4 (H.264 + AAC) of a track: spectrum bars, a waveform or "
        f"particles that follow the sound, over images or a gradient, up to {MAX_SECONDS} s."
    ),
    timeout=3600,
)
def music_video(ctx: Context[MusicVideoInput]) -> dict[str, Any]:
    value = ctx.input
    ref = value.audio.ref if isinstance(value.audio, TaskOutput) else value.audio
    path = ctx.file(ref)
    limit = MAX_SECONDS * SAMPLE_RATE

    source = Decoded(path)
    expected = min(limit, source.expected_samples or limit)
    if (source.expected_samples or 0) > limit:
        ctx.warn("audio_cut", f"The audio is cut at {MAX_SECONDS} s.", field="input.audio")

    def heard(samples: int) -> None:
        ctx.check_cancelled()
        ctx.progress(_LISTENED * min(1.0, samples / max(1, expected)), "listening")

    ctx.progress(0, "listening")
    listening = listen(Limited(source, limit), FPS, on_progress=heard)
    width, height = frame_size(value.aspect, value.resolution)
    visuals = Visualizer(
        listening,
        width,
        height,
        style=value.style,
        backgrounds=[ctx.file(image) for image in value.background_images or []],
        title=value.title,
    )
    audio = Fitted(lambda: Limited(Decoded(path), limit), listening.samples, fade=False)
    total = listening.frames

    def after_frame(done: int) -> None:
        ctx.check_cancelled()
        percent = _LISTENED + (_RENDERED - _LISTENED) * done / total
        ctx.progress(percent, "rendering", f"{done} of {total} frames")

    video_path = ctx.output_file("music-video.mp4", "video/mp4")
    thumbnail_path = ctx.output_file("thumbnail.jpg", "image/jpeg")
    make_video(
        video_path,
        thumbnail_path,
        width=width,
        height=height,
        frames=total,
        render=visuals.frame,
        audio=audio,
        thumbnail_at=total // 2,
        after_frame=after_frame,
    )
    seconds = total / FPS
    ctx.usage(video_seconds=seconds)
    ctx.progress(100, "storing", "done")
    return {
        "type": "music_video",
        "video": video_path,
        "thumbnail": thumbnail_path,
        "duration": seconds,
        "audio_duration": round(listening.samples / SAMPLE_RATE, 3),
        "width": width,
        "height": height,
        "fps": FPS,
        "style": value.style,
    }
