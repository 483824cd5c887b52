"""Watching video with numbers: every frame decoded, the colour at chosen points,
and the MP4's box order."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class DecodedVideo:
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    #: The mean RGB colour of the central ninth of each frame, in decoding order.
    centres: NDArray[np.float64]
    #: The same of the leftmost and the rightmost tenth of each frame.
    lefts: NDArray[np.float64]
    rights: NDArray[np.float64]

    @property
    def frames(self) -> int:
        return int(self.centres.shape[0])

    @property
    def seconds(self) -> float:
        """The duration the decoded frames make (not the container's claim)."""
        return self.frames / self.fps


def decode_video(path: Path) -> DecodedVideo:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        codec = stream.codec_context.name
        centres, lefts, rights = [], [], []
        width = height = 0
        pix_fmt = ""
        for frame in container.decode(stream):
            width, height, pix_fmt = frame.width, frame.height, frame.format.name
            rgb = frame.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            centre = rgb[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
            centres.append(centre.reshape(-1, 3).mean(axis=0))
            lefts.append(rgb[:, : w // 10].reshape(-1, 3).mean(axis=0))
            rights.append(rgb[:, w - w // 10 :].reshape(-1, 3).mean(axis=0))
    return DecodedVideo(
        codec, pix_fmt, width, height, fps, np.array(centres), np.array(lefts), np.array(rights)
    )


def top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4's top-level boxes, in file order."""
    names = []
    with path.open("rb") as handle:
        while header := handle.read(8):
            size, kind = struct.unpack(">I4s", header)
            skip = size - 8
            if size == 1:
                skip = struct.unpack(">Q", handle.read(8))[0] - 16
            elif size == 0:
                names.append(kind.decode("latin-1"))
                break
            names.append(kind.decode("latin-1"))
            handle.seek(skip, 1)
    return names


def measure_frames(path: Path, measure: Callable[[NDArray[np.uint8]], float]) -> list[float]:
    """``measure`` of every decoded frame (as RGB, height × width × 3), in order."""
    with av.open(str(path)) as container:
        return [
            measure(frame.to_ndarray(format="rgb24").astype(np.uint8, copy=False))
            for frame in container.decode(video=0)
        ]
