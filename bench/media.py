"""Media workflows' speed: wall time, realtime factor and peak memory.

Each case runs in a fresh child process (so its peak RSS is its own) and is set
beside its ceiling, measured in the same run: PyAV encoding samples (or frames)
rendered beforehand, with the same encoder settings. The ratio says how much of the
ceiling's speed the workflow keeps.

The video cases run the workflow's handler in the child as an executor does:
slideshows (720p and 1080p, 16:9) of ten 1920×1280 JPEG pictures, 3 s each, with
Ken Burns, crossfades and composed music; a music video (720p, 16:9, spectrum) of
a composed MP3 made before the clock starts; an e-commerce promo (720p, 9:16) of
five pictures with a title, price, three bullet points, an end card and composed
music. Their ceilings render every frame and audio block first (held in memory,
not timed), then time only the same MP4 writer encoding them.

    python bench/media.py [--seconds 60] [--video-seconds 30] [--promo-seconds 15]
                          [--repeat 2] [--only slideshow]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPT = "upbeat pop about a summer road trip"
TAGS = ["upbeat", "pop"]


class _Clock:
    """Wall time, and the CPU time of the whole process (all its threads), since
    it was made: on a shared machine CPU/cores bounds what an idle one would do."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = self._used()

    @staticmethod
    def _used() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def figures(self) -> dict[str, float]:
        return {"wall": time.perf_counter() - self._wall, "cpu": self._used() - self._cpu}


def _music(seconds: float, out: Path) -> dict[str, Any]:
    from taskgate.workflows.builtin.media.compose import compose
    from taskgate.workflows.builtin.media.cover import draw_cover, save_png
    from taskgate.workflows.builtin.media.style import style_for, title_for
    from taskgate.workflows.builtin.music import render_mp3

    clock = _Clock()
    style = style_for(PROMPT, TAGS)
    score = compose(style, seed=1, seconds=seconds, words=(PROMPT, *TAGS))
    render_mp3(score, out / "track.mp3", title=title_for(PROMPT, TAGS))
    cover = draw_cover(1, (PROMPT, *TAGS), minor=score.mode == "minor", brightness=0.6)
    save_png(cover, out / "cover.png")
    return clock.figures()


def _music_ceiling(seconds: float, out: Path) -> dict[str, Any]:
    """The encoder alone: the same number of samples, rendered before the clock
    starts, encoded by the same writer in the same blocks."""
    import numpy as np

    from taskgate.workflows.builtin.media.compose import SAMPLE_RATE
    from taskgate.workflows.builtin.media.encode import Mp3Writer
    from taskgate.workflows.builtin.music import BLOCK

    n = round(seconds * SAMPLE_RATE)
    rng = np.random.default_rng(1)
    t = np.arange(n) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)
    samples = np.stack([tone, tone]).astype(np.float32)
    clock = _Clock()
    with Mp3Writer(out / "ceiling.mp3", sample_rate=SAMPLE_RATE) as writer:
        for start in range(0, n, BLOCK):
            writer.write(samples[:, start : start + BLOCK])
    return clock.figures()


class _Quiet:
    """A worker channel that drops progress and never cancels."""

    def progress(self, percent: float, stage: str | None, message: str | None) -> None:
        pass

    def is_cancelled(self) -> bool:
        return False


def _pictures(count: int, out: Path) -> dict[str, Path]:
    """``count`` photo-sized JPEGs (abstract art: gradients, glows, lines), by a
    made-up file id."""
    from PIL import Image

    from taskgate.workflows.builtin.media.cover import draw_cover

    found = {}
    for i in range(count):
        path = out / f"picture-{i}.jpg"
        art = draw_cover(i, ("bench", "holiday"), minor=i % 2 == 1, brightness=0.6)
        art.resize((1920, 1280), Image.Resampling.BICUBIC).save(path, quality=90)
        found[f"file_{i:026d}"] = path
    return found


def _slideshow_context(resolution: str, seconds: float, out: Path) -> Any:
    from taskgate.workflows.builtin.slideshow import SlideshowInput

    pictures = _pictures(max(1, round(seconds / 3)), out)
    value = SlideshowInput.model_validate(
        {
            "images": list(pictures),
            "seconds_per_image": 3,
            "resolution": resolution,
            "music": {"generate": {"prompt": PROMPT, "tags": TAGS, "seed": 1}},
        }
    )
    return _context(value, pictures, out)


def _slideshow(resolution: str) -> Any:
    def case(seconds: float, out: Path) -> dict[str, Any]:
        from taskgate.workflows.builtin.slideshow import slideshow

        ctx = _slideshow_context(resolution, seconds, out)
        clock = _Clock()
        result = slideshow.handler(ctx)
        figures: dict[str, Any] = clock.figures()
        assert isinstance(result, dict)
        return {
            **figures,
            "media": result["duration"],
            "mb": result["video"].stat().st_size / 1e6,
        }

    return case


def _encode_ceiling(
    frames: list[Any], blocks: list[Any], width: int, height: int, out: Path
) -> dict[str, Any]:
    """Time the MP4 writer alone on frames (yuv420p arrays) and audio blocks that
    were rendered before, interleaved as the workflows interleave them."""
    import av

    from taskgate.workflows.builtin.media.video import FPS, Mp4Writer

    per_frame = len(blocks) / len(frames)
    clock = _Clock()
    with Mp4Writer(out / "ceiling.mp4", width, height, audio=bool(blocks)) as writer:
        sent = 0
        for k, array in enumerate(frames):
            writer.write_frame(av.VideoFrame.from_ndarray(array, format="yuv420p"))
            while sent < min(len(blocks), (k + 1) * per_frame + 1):
                writer.write_audio(blocks[sent])
                sent += 1
    return {**clock.figures(), "media": len(frames) / FPS}


def _read_all(audio: Any) -> list[Any]:
    from taskgate.workflows.builtin.media.pipeline import AUDIO_BLOCK

    blocks = []
    while audio.position < audio.total:
        blocks.append(audio.read(AUDIO_BLOCK))
    audio.close()
    return blocks


def _slideshow_ceiling(resolution: str) -> Any:
    def case(seconds: float, out: Path) -> dict[str, Any]:
        from taskgate.workflows.builtin.media.slides import Layout, Slides, transition_frames
        from taskgate.workflows.builtin.media.video import FPS, frame_size
        from taskgate.workflows.builtin.video_music import soundtrack_for

        ctx = _slideshow_context(resolution, seconds, out)
        value = ctx.input
        width, height = frame_size(value.aspect, value.resolution)
        layout = Layout(
            width=width,
            height=height,
            frames_per_slide=value.seconds_per_image * FPS,
            count=len(value.images),
            transition=value.transition,
            transition_frames=transition_frames(value.seconds_per_image, FPS, value.transition),
            ken_burns=value.ken_burns,
        )
        slides = Slides([ctx.file(ref) for ref in value.images], layout)
        frames = [
            slides.frame(k).to_ndarray() for k in range(layout.total_frames)
        ]  # yuv420p, ~1.4 MB (720p) or 3.1 MB (1080p) each
        audio = soundtrack_for(ctx, value.music, value.seconds)
        assert audio is not None
        return _encode_ceiling(frames, _read_all(audio), width, height, out)

    return case


def _context(value: Any, files: dict[str, Path], out: Path) -> Any:
    from taskgate.workflows.sdk import Context

    ctx: Context[Any] = Context(
        input=value, task_id="task_bench", attempt=1, _work_dir=out / "work", _channel=_Quiet()
    )
    ctx._input_files.update(files)
    return ctx


def _music_video_context(seconds: float, out: Path) -> Any:
    """A music video's input: a composed MP3 of ``seconds``, made here (not timed)."""
    from taskgate.workflows.builtin.media.compose import compose
    from taskgate.workflows.builtin.media.style import style_for, title_for
    from taskgate.workflows.builtin.music import render_mp3
    from taskgate.workflows.builtin.music_video import MusicVideoInput

    score = compose(style_for(PROMPT, TAGS), seed=1, seconds=seconds, words=(PROMPT, *TAGS))
    track = out / "track.mp3"
    render_mp3(score, track, title=title_for(PROMPT, TAGS))
    ref = f"file_{0:026d}"
    value = MusicVideoInput.model_validate(
        {"audio": ref, "resolution": "720p", "title": "Summer road trip — live"}
    )
    return _context(value, {ref: track}, out)


def _music_video(seconds: float, out: Path) -> dict[str, Any]:
    from taskgate.workflows.builtin.music_video import music_video

    ctx = _music_video_context(seconds, out)
    clock = _Clock()
    result = music_video.handler(ctx)
    figures: dict[str, Any] = clock.figures()
    assert isinstance(result, dict)
    return {**figures, "media": result["duration"], "mb": result["video"].stat().st_size / 1e6}


def _music_video_ceiling(seconds: float, out: Path) -> dict[str, Any]:
    from taskgate.workflows.builtin.media.listen import listen
    from taskgate.workflows.builtin.media.soundtrack import Decoded, Fitted
    from taskgate.workflows.builtin.media.video import FPS, frame_size
    from taskgate.workflows.builtin.media.visualizer import Visualizer

    ctx = _music_video_context(seconds, out)
    path = ctx.file(ctx.input.audio)
    listening = listen(Decoded(path), FPS)
    width, height = frame_size(ctx.input.aspect, ctx.input.resolution)
    visuals = Visualizer(listening, width, height, title=ctx.input.title)
    frames = [visuals.frame(k).to_ndarray() for k in range(listening.frames)]
    audio = Fitted(lambda: Decoded(path), listening.samples, fade=False)
    return _encode_ceiling(frames, _read_all(audio), width, height, out)


def _promo_context(seconds: float, out: Path) -> Any:
    from taskgate.workflows.builtin.ecommerce_video import EcommerceVideoInput

    pictures = _pictures(5, out)
    value = EcommerceVideoInput.model_validate(
        {
            "product_images": list(pictures),
            "title": "Café Runner — trail shoe",
            "price": "€89",
            "bullet_points": ["Breathable mesh upper", "180 g a shoe", "Free returns — 30 days"],
            "call_to_action": "Shop now →",
            "brand_color": "#00a3ff",
            "aspect": "9:16",
            "resolution": "720p",
            "duration": round(seconds),
            "music": {"generate": {"prompt": PROMPT, "tags": TAGS, "seed": 1}},
        }
    )
    return _context(value, pictures, out)


def _promo(seconds: float, out: Path) -> dict[str, Any]:
    from taskgate.workflows.builtin.ecommerce_video import ecommerce_video

    ctx = _promo_context(seconds, out)
    clock = _Clock()
    result = ecommerce_video.handler(ctx)
    figures: dict[str, Any] = clock.figures()
    assert isinstance(result, dict)
    return {**figures, "media": result["duration"], "mb": result["video"].stat().st_size / 1e6}


def _promo_ceiling(seconds: float, out: Path) -> dict[str, Any]:
    from taskgate.workflows.builtin.ecommerce_video import DEFAULT_ACCENT
    from taskgate.workflows.builtin.media.promo import Promo, PromoText, parse_colour
    from taskgate.workflows.builtin.media.video import FPS, frame_size
    from taskgate.workflows.builtin.video_music import soundtrack_for

    ctx = _promo_context(seconds, out)
    value = ctx.input
    width, height = frame_size(value.aspect, value.resolution)
    total = value.duration * FPS
    text = PromoText(
        title=value.title,
        price=value.price,
        bullets=list(value.bullet_points or []),
        call_to_action=value.call_to_action,
        accent=parse_colour(value.brand_color or DEFAULT_ACCENT),
    )
    promo = Promo(
        [ctx.file(ref) for ref in value.product_images],
        text,
        width=width,
        height=height,
        frames=total,
        fps=FPS,
    )
    frames = [promo.frame(k).to_ndarray() for k in range(total)]
    audio = soundtrack_for(ctx, value.music, value.duration)
    assert audio is not None
    return _encode_ceiling(frames, _read_all(audio), width, height, out)


CASES = {
    "music": _music,
    "music-ceiling": _music_ceiling,
    "slideshow-720p": _slideshow("720p"),
    "slideshow-720p-ceiling": _slideshow_ceiling("720p"),
    "slideshow-1080p": _slideshow("1080p"),
    "slideshow-1080p-ceiling": _slideshow_ceiling("1080p"),
    "music-video-720p": _music_video,
    "music-video-720p-ceiling": _music_video_ceiling,
    "ecommerce-720p": _promo,
    "ecommerce-720p-ceiling": _promo_ceiling,
}
#: Each workflow case, its ceiling, and its targets: × realtime, peak RSS (MB).
TARGETS: dict[str, tuple[str, float | None, float | None]] = {
    "music": ("music-ceiling", 10.0, None),
    "slideshow-720p": ("slideshow-720p-ceiling", 3.0, 400.0),
    "slideshow-1080p": ("slideshow-1080p-ceiling", 1.0, 700.0),
    "music-video-720p": ("music-video-720p-ceiling", None, None),
    "ecommerce-720p": ("ecommerce-720p-ceiling", None, None),
}


def child(case: str, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        figures = CASES[case](seconds, Path(tmp))
    figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def run(case: str, seconds: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", case, "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the music")
    parser.add_argument(
        "--video-seconds", type=float, default=30.0, help="length of the slideshows (3 s a picture)"
    )
    parser.add_argument(
        "--promo-seconds", type=float, default=15.0, help="length of the e-commerce promo"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs per case (best is kept)")
    parser.add_argument("--only", help="run only the cases whose name starts with this")
    parser.add_argument("--child", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds)
        return
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(
        f"{'case':<26} {'media s':>8} {'wall s':>8} {'× realtime':>11} {'CPU s':>7} "
        f"{'peak RSS MB':>12}"
    )
    best: dict[str, dict[str, Any]] = {}
    for case in CASES:
        if args.only and not case.startswith(args.only):
            continue
        if case.startswith(("slideshow", "music-video")):
            seconds = args.video_seconds
        elif case.startswith("ecommerce"):
            seconds = args.promo_seconds
        else:
            seconds = args.seconds
        runs = [run(case, seconds) for _ in range(args.repeat)]
        best[case] = min(runs, key=lambda figures: float(figures["wall"]))
        wall = float(best[case]["wall"])
        media = float(best[case].get("media", seconds))
        best[case]["rss_mb"] = max(float(r["rss_mb"]) for r in runs)
        print(
            f"{case:<26} {media:>8.1f} {wall:>8.2f} {media / wall:>11.1f} "
            f"{float(best[case]['cpu']):>7.1f} {best[case]['rss_mb']:>12.0f}"
        )
    for case, (ceiling, speed, rss) in TARGETS.items():
        if case not in best or ceiling not in best:
            continue
        ratio = float(best[ceiling]["wall"]) / float(best[case]["wall"])
        cpu_ratio = float(best[ceiling]["cpu"]) / float(best[case]["cpu"])
        targets = [f"≥ {speed:g}× realtime" if speed else "", f"RSS ≤ {rss:g} MB" if rss else ""]
        target = ", ".join(t for t in targets if t)
        print(
            f"{case} keeps {ratio:.0%} of the encoder ceiling's speed ({cpu_ratio:.0%} by CPU "
            f"time" + (f"; target {target})" if target else ")")
        )


if __name__ == "__main__":
    main()
