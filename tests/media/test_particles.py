"""The particles style: sparks that follow the sound's loudness, the same for the
same audio, and drawn from the frame number alone (frames are rendered out of
order on several threads)."""

from __future__ import annotations

import numpy as np

from taskgate.workflows.builtin.media.listen import BANDS, COLUMNS, Listening
from taskgate.workflows.builtin.media.visualizer import Visualizer

FPS = 24


def listening(levels: list[float]) -> Listening:
    """A made-up listening: every band at the given level, frame by frame."""
    frames = len(levels)
    bands = np.repeat(np.array(levels, dtype=np.float32)[:, None], BANDS, axis=1)
    waves = np.zeros((frames, COLUMNS, 2), dtype=np.float32)
    return Listening(FPS, frames * 44_100 // FPS, bands, waves)


def loud_then_silent() -> Listening:
    pulse = [0.5 + 0.3 * np.sin(k / 3) for k in range(48)]
    return listening([*pulse, *([0.0] * 48)])


def test_the_same_audio_gives_the_same_frames_in_any_order() -> None:
    one = Visualizer(loud_then_silent(), 320, 180, style="particles")
    two = Visualizer(loud_then_silent(), 320, 180, style="particles")
    order = [40, 3, 20, 95, 0]
    first = {k: one.frame(k).to_ndarray() for k in order}
    for k in sorted(order):
        assert np.array_equal(two.frame(k).to_ndarray(), first[k]), k


def test_sparks_follow_loudness_and_silence_leaves_the_background() -> None:
    visuals = Visualizer(loud_then_silent(), 320, 180, style="particles")
    silent = Visualizer(listening([0.0] * 96), 320, 180, style="particles")
    background = silent.frame(0).to_ndarray()

    def drawn(k: int) -> float:
        """The share of luma samples that differ from the bare background."""
        y = visuals.frame(k).to_ndarray()[:180]
        return float((np.abs(y.astype(int) - background[:180].astype(int)) > 8).mean())

    assert all(drawn(k) > 0.01 for k in (12, 24, 40))
    # A second after the sound stops (sparks live under one), nothing is left.
    assert all(drawn(k) == 0 for k in (48 + FPS, 80, 95))
    for k in (0, 50, 95):
        assert np.array_equal(silent.frame(k).to_ndarray(), background)


def test_a_louder_passage_throws_more_sparks() -> None:
    visuals = Visualizer(listening([0.2] * 48 + [0.6] * 48), 320, 180, style="particles")
    background = Visualizer(listening([0.0] * 4), 320, 180, style="particles").frame(0)
    bare = background.to_ndarray()[:180].astype(int)

    def drawn(k: int) -> float:
        y = visuals.frame(k).to_ndarray()[:180].astype(int)
        return float((np.abs(y - bare) > 8).mean())

    quieter, louder = drawn(44), drawn(92)
    assert quieter > 0.001
    assert louder > 1.5 * quieter, (quieter, louder)
