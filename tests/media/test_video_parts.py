"""The parts of the video workflows: frame sizes, soundtracks cut, looped and faded
to a length, and an MP4 writer that leaves no file when stopped."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from taskgate.workflows.builtin.media.soundtrack import SAMPLE_RATE, Decoded, Fitted
from taskgate.workflows.builtin.media.video import Mp4Writer, frame_size
from tests import filesamples


@pytest.mark.parametrize(
    ("aspect", "resolution", "size"),
    [
        ("16:9", "360p", (640, 360)),
        ("9:16", "720p", (720, 1280)),
        ("1:1", "1080p", (1080, 1080)),
        ("16:9", "1080p", (1920, 1080)),
        ("9:16", "360p", (360, 640)),
    ],
)
def test_frame_sizes_are_even_with_the_short_side_asked(
    aspect: str, resolution: str, size: tuple[int, int]
) -> None:
    found = frame_size(aspect, resolution)  # type: ignore[arg-type]
    assert found == size
    assert all(side % 2 == 0 for side in found)


def test_a_short_file_is_looped_to_the_length_and_faded(tmp_path: Path) -> None:
    tone = tmp_path / "tone.wav"
    tone.write_bytes(filesamples.audio("wav", seconds=0.5, rate=48000))
    total = 3 * SAMPLE_RATE
    fitted = Fitted(lambda: Decoded(tone), total)
    blocks = []
    while fitted.position < total:
        blocks.append(fitted.read(10_000))
    fitted.close()
    audio = np.concatenate(blocks, axis=1)
    assert audio.shape == (2, total)
    for second in (0, 1, 2):  # still sounding after the file's half second
        chunk = audio[:, second * SAMPLE_RATE + 2000 : second * SAMPLE_RATE + 12000]
        assert float(np.sqrt(np.mean(chunk**2))) > 0.1, second
    assert float(np.abs(audio[:, -50:]).max()) < 0.01  # faded out
    assert float(np.abs(audio[:, :20]).max()) < 0.05  # faded in


def test_a_long_file_is_cut_to_the_length(tmp_path: Path) -> None:
    tone = tmp_path / "tone.mp3"
    tone.write_bytes(filesamples.audio("mp3", seconds=2.0, rate=44100))
    fitted = Fitted(lambda: Decoded(tone), SAMPLE_RATE // 2)
    block = fitted.read(10 * SAMPLE_RATE)
    assert block.shape == (2, SAMPLE_RATE // 2)
    assert fitted.read(100).shape == (2, 0)
    fitted.close()


def _write_then_fail(path: Path) -> None:
    with Mp4Writer(path, 64, 48, audio=True) as writer:
        for _ in range(30):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            writer.write_frame(frame.reformat(format="yuv420p"))
        assert path.exists()
        raise RuntimeError("stop")


def test_a_stopped_writer_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "partial.mp4"
    with pytest.raises(RuntimeError):
        _write_then_fail(path)
    assert not path.exists()
    with pytest.raises(ValueError, match="even"):
        Mp4Writer(tmp_path / "odd.mp4", 65, 48)
