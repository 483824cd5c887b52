"""Media workflows' speed: wall time, realtime factor and peak memory.

Each case runs in a fresh child process (so its peak RSS is its own) and is set
beside its ceiling, measured in the same run: PyAV encoding samples rendered
beforehand, with the same encoder settings. The ratio says how much of the
ceiling's speed the workflow keeps.

    python bench/media.py [--seconds 60] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPT = "upbeat pop about a summer road trip"
TAGS = ["upbeat", "pop"]


def _music(seconds: float, out: Path) -> dict[str, Any]:
    from taskgate.workflows.builtin.media.compose import compose
    from taskgate.workflows.builtin.media.cover import draw_cover, save_png
    from taskgate.workflows.builtin.media.style import style_for, title_for
    from taskgate.workflows.builtin.music import render_mp3

    started = time.perf_counter()
    style = style_for(PROMPT, TAGS)
    score = compose(style, seed=1, seconds=seconds, words=(PROMPT, *TAGS))
    render_mp3(score, out / "track.mp3", title=title_for(PROMPT, TAGS))
    cover = draw_cover(1, (PROMPT, *TAGS), minor=score.mode == "minor", brightness=0.6)
    save_png(cover, out / "cover.png")
    return {"wall": time.perf_counter() - started}


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
    started = time.perf_counter()
    with Mp3Writer(out / "ceiling.mp3", sample_rate=SAMPLE_RATE) as writer:
        for start in range(0, n, BLOCK):
            writer.write(samples[:, start : start + BLOCK])
    return {"wall": time.perf_counter() - started}


CASES = {"music": _music, "music-ceiling": _music_ceiling}


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
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the media")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case (best is kept)")
    parser.add_argument("--child", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds)
        return
    print(f"{'case':<16} {'media s':>8} {'wall s':>8} {'× realtime':>11} {'peak RSS MB':>12}")
    best: dict[str, dict[str, Any]] = {}
    for case in CASES:
        runs = [run(case, args.seconds) for _ in range(args.repeat)]
        best[case] = min(runs, key=lambda figures: float(figures["wall"]))
        wall = float(best[case]["wall"])
        print(
            f"{case:<16} {args.seconds:>8.1f} {wall:>8.2f} {args.seconds / wall:>11.1f} "
            f"{max(float(r['rss_mb']) for r in runs):>12.0f}"
        )
    ratio = float(best["music-ceiling"]["wall"]) / float(best["music"]["wall"])
    print(f"music keeps {ratio:.0%} of the encoder ceiling's speed (target ≥ 10× realtime)")


if __name__ == "__main__":
    main()
