"""The soundtrack of a video workflow: none, an uploaded audio file, or music
composed as the ``music`` workflow does, cut or looped to the video and faded out.

Composed music is metered as ``audio_seconds`` and priced as the ``music``
workflow prices it; an uploaded file costs nothing more.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import av
from pydantic import BaseModel, ConfigDict, Field, model_validator

from taskgate.workflows.builtin.media.compose import compose
from taskgate.workflows.builtin.media.soundtrack import SAMPLE_RATE, Decoded, Fitted, Synthesised
from taskgate.workflows.builtin.media.style import style_for
from taskgate.workflows.builtin.media.synth import Renderer
from taskgate.workflows.builtin.music import MAX_SECONDS, MIN_SECONDS, MusicInput
from taskgate.workflows.sdk import AudioRef, Context, Estimate, Rate, Rates, WorkflowError

#: Composed music costs what the ``music`` workflow charges for it.
AUDIO_CREDITS_PER_SECOND = Decimal("0.02")
#: Seconds of work per second of composed music, for estimates.
WORK_PER_AUDIO_SECOND = 0.1


class VideoMusic(BaseModel):
    """Either an audio file, or music to compose (a ``music`` workflow input)."""

    model_config = ConfigDict(extra="forbid")

    file_id: AudioRef | None = Field(
        default=None, description="An uploaded audio file (file_…) or an http(s) URL of one."
    )
    generate: MusicInput | None = Field(
        default=None,
        description="Compose music as the music workflow does; its duration follows the video.",
    )

    @model_validator(mode="after")
    def _one(self) -> VideoMusic:
        if (self.file_id is None) == (self.generate is None):
            raise ValueError("give either file_id or generate")
        return self


def music_seconds(video_seconds: float) -> float:
    """Seconds of music composed for a video (looped when the video is longer)."""
    return min(MAX_SECONDS, max(MIN_SECONDS, float(video_seconds)))


def music_estimate(music: VideoMusic | None, video_seconds: float) -> tuple[Decimal, float]:
    """Credits and seconds of work the soundtrack adds to a video's estimate."""
    if music is None or music.generate is None:
        return Decimal(0), 0.0
    seconds = music_seconds(video_seconds)
    return (
        AUDIO_CREDITS_PER_SECOND * Decimal(str(seconds)),
        WORK_PER_AUDIO_SECOND * seconds,
    )


@dataclass(frozen=True, slots=True)
class PicturePricing:
    """The price and estimate of a video made of pictures and a soundtrack: per
    second of video, per picture, and the soundtrack's (composed music only)."""

    video_credits_per_second: Decimal
    image_credits: Decimal
    #: Seconds of work per second of video, by resolution (measured on 2 cores,
    #: with margin).
    work_per_second: dict[str, float]

    def estimate(
        self, seconds: float, images: int, resolution: str, music: VideoMusic | None
    ) -> Estimate:
        credits = self.video_credits_per_second * Decimal(str(seconds))
        credits += self.image_credits * images
        work = 1.0 + self.work_per_second[resolution] * seconds
        music_credits, music_work = music_estimate(music, seconds)
        return Estimate(credits=credits + music_credits, seconds=work + music_work)

    def rates(self) -> Rates:
        return Rates(
            video_seconds=Rate("second", self.video_credits_per_second),
            image_count=Rate("image", self.image_credits),
            audio_seconds=Rate("second", AUDIO_CREDITS_PER_SECOND),
        )


def soundtrack_for(
    ctx: Context[Any], music: VideoMusic | None, video_seconds: float
) -> Fitted | None:
    """The audio of a ``video_seconds`` long video (None: a silent video). Composed
    music is metered here; an undecodable file is the input's fault."""
    total = round(video_seconds * SAMPLE_RATE)
    if music is None:
        return None
    if music.file_id is not None:
        path = ctx.file(music.file_id)
        try:
            return Fitted(lambda: Decoded(path), total)
        except (av.error.FFmpegError, ValueError) as exc:
            raise WorkflowError(
                f"input.music.file_id: the audio could not be decoded: {exc}", code="invalid_input"
            ) from exc
    spec = music.generate
    assert spec is not None
    ctx.progress(0, "composing", "music")
    seed = spec.seed if spec.seed is not None else secrets.randbelow(2**32)
    score = compose(
        style_for(spec.prompt, spec.tags),
        seed=seed,
        seconds=music_seconds(video_seconds),
        instrumental=spec.instrumental,
        words=(spec.prompt, *spec.tags),
    )
    ctx.usage(audio_seconds=score.seconds)
    return Fitted(lambda: Synthesised(Renderer(score)), total)
