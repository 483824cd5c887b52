"""``music``: procedural tracks from a prompt and tags, as MP3 with cover art.

Each track is composed from the words and a seed (tempo, key, mode, instruments
and drum pattern follow the tags and prompt), synthesised and encoded to MP3
(44.1 kHz stereo, 192 kb/s) block by block, so memory stays flat however long
the track. The same input with the same seed gives the same bytes. Progress
follows the samples done; a cancel request is seen within one block (a fraction
of a second of work) and leaves no partial file.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

from taskgate.workflows.builtin.media.compose import SAMPLE_RATE, Score, compose
from taskgate.workflows.builtin.media.cover import draw_cover, save_png
from taskgate.workflows.builtin.media.encode import Mp3Writer
from taskgate.workflows.builtin.media.style import split_tags, style_for, title_for
from taskgate.workflows.builtin.media.synth import Renderer
from taskgate.workflows.sdk import Context, Estimate, Rate, Rates, workflow

MIN_SECONDS = 2.0
MAX_SECONDS = 240.0
MAX_TAGS = 20
MAX_TAG_CHARS = 40
#: Samples rendered and encoded between two looks at the cancel flag (~0.37 s of
#: audio, a few hundredths of a second of work).
BLOCK = 16_384
CREDITS_PER_SECOND = Decimal("0.02")
#: Seconds of work per second of audio, for the estimate (measured: ~0.07).
WORK_PER_SECOND = 0.1
_COMPOSING, _RENDERING = 2.0, 94.0  # percent of a track done after each stage


def _tags(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list) and not all(isinstance(tag, str) for tag in value):
        raise ValueError("tags is a string or a list of strings")
    if not isinstance(value, str | list):
        raise ValueError("tags is a string or a list of strings")
    tags = split_tags(value)
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    if any(len(tag) > MAX_TAG_CHARS for tag in tags):
        raise ValueError(f"a tag is at most {MAX_TAG_CHARS} characters")
    return tags


Tags = Annotated[
    list[str],
    BeforeValidator(_tags),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_TAGS * (MAX_TAG_CHARS + 2)},
                {
                    "type": "array",
                    "items": {"type": "string", "maxLength": MAX_TAG_CHARS},
                    "maxItems": MAX_TAGS,
                },
            ],
            "description": "Tags: a string of comma- or space-separated tags, or a list.",
        }
    ),
]


class MusicInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(
        min_length=1, max_length=3000, description="What the music is about, or sounds like."
    )
    tags: Tags = Field(default_factory=list)
    duration: float = Field(
        default=30.0, ge=MIN_SECONDS, le=MAX_SECONDS, description="Seconds of each track."
    )
    instrumental: bool = Field(default=True, description="False adds a wordless sung line.")
    seed: int | None = Field(
        default=None, ge=0, le=2**32 - 1, description="The same seed gives the same tracks."
    )
    count: int = Field(default=1, ge=1, le=2, description="How many tracks (each its own seed).")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is blank")
        return value.strip()


def _estimate(value: MusicInput) -> Estimate:
    seconds = value.duration * value.count
    return Estimate(
        credits=CREDITS_PER_SECOND * Decimal(str(value.duration)) * value.count,
        seconds=1.0 + WORK_PER_SECOND * seconds,
    )


def track_result(
    score: Score, *, title: str, prompt: str, tags: list[str], audio: Path, image: Path
) -> dict[str, Any]:
    """One track's entry in the task's output: what it is, and its files (the output
    shows each file's entry, with its id and a signed link, in their place)."""
    return {
        "type": "track",
        "audio": audio,
        "image": image,
        "title": title,
        "prompt": prompt,
        "tags": tags,
        "duration": round(score.seconds, 3),
        "bpm": score.bpm,
        "key": score.key,
        "mode": score.mode,
        "seed": score.seed,
    }


def render_mp3(
    score: Score,
    path: Path,
    *,
    title: str,
    on_block: Callable[[int], None] = lambda _done: None,
) -> None:
    """Synthesise and encode ``score`` to ``path`` block by block, calling
    ``on_block(samples_done)`` after each block. If ``on_block`` raises, the
    partial file is removed and the exception goes on."""
    renderer = Renderer(score)
    metadata = {"title": title, "artist": "taskgate", "comment": f"seed {score.seed}"}
    with Mp3Writer(path, sample_rate=SAMPLE_RATE, metadata=metadata) as writer:
        for start in range(0, score.samples, BLOCK):
            writer.write(renderer.render(start, start + BLOCK))
            on_block(min(score.samples, start + BLOCK))


@workflow(
    "music",
    input=MusicInput,
    estimate=_estimate,
    price=Rates(audio_seconds=Rate("second", CREDITS_PER_SECOND)),
    title="Music",
    description=(
        "Composes instrumental tracks from a prompt and tags: MP3 (44.1 kHz stereo, "
        "192 kb/s) with a 1024×1024 PNG cover, title, tempo, key and mode."
    ),
    timeout=1800,
)
def music(ctx: Context[MusicInput]) -> list[dict[str, Any]]:
    value = ctx.input
    first_seed = value.seed if value.seed is not None else secrets.randbelow(2**32)
    title = title_for(value.prompt, value.tags)
    style = style_for(value.prompt, value.tags)
    words = (value.prompt, *value.tags)
    share = 100.0 / value.count
    results = []
    for index in range(value.count):
        done = share * index
        number = index + 1
        ctx.progress(done, "composing", f"track {number} of {value.count}")
        seed = (first_seed + index) % 2**32
        score = compose(
            style,
            seed=seed,
            seconds=value.duration,
            instrumental=value.instrumental,
            words=words,
        )
        ctx.check_cancelled()

        def rendered(samples: int, done: float = done, score: Score = score) -> None:
            ctx.check_cancelled()
            part = _COMPOSING + (_RENDERING - _COMPOSING) * samples / score.samples
            ctx.progress(done + share * part / 100, "rendering", f"{samples} samples")

        audio = ctx.output_file(f"track-{number}.mp3", "audio/mpeg")
        render_mp3(score, audio, title=title, on_block=rendered)
        ctx.progress(done + share * _RENDERING / 100, "encoding", "cover art")
        image = ctx.output_file(f"cover-{number}.png", "image/png")
        cover = draw_cover(seed, words, minor=score.mode == "minor", brightness=style.brightness)
        ctx.check_cancelled()
        save_png(cover, image)
        ctx.usage(audio_seconds=score.seconds)
        results.append(
            track_result(
                score, title=title, prompt=value.prompt, tags=value.tags, audio=audio, image=image
            )
        )
    ctx.progress(100, "encoding", "done")
    return results
