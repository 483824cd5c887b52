"""Making a video file: frames rendered ahead on threads, encoded in order, with the
soundtrack interleaved, and a thumbnail taken on the way.

PyAV lets go of the GIL while x264 encodes, so two threads rendering the next few
frames keep both cores busy; at most AHEAD frames wait, whatever the length.
If anything raises (a cancel request, say), neither the video nor the thumbnail
is left behind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import av
from PIL import Image

from taskgate.workflows.builtin.media.soundtrack import SAMPLE_RATE, Fitted
from taskgate.workflows.builtin.media.video import FPS, Mp4Writer

#: Frames rendered ahead of the encoder, and the threads that render them.
AHEAD = 6
RENDER_THREADS = 2
#: Audio samples encoded at a time (kept at most this far ahead of the video).
AUDIO_BLOCK = 16_384


def make_video(
    video: Path,
    thumbnail: Path,
    *,
    width: int,
    height: int,
    frames: int,
    render: Callable[[int], av.VideoFrame],
    audio: Fitted | None = None,
    thumbnail_at: int = 0,
    after_frame: Callable[[int], None] = lambda _done: None,
) -> None:
    """Write ``frames`` frames of ``render(k)`` (and ``audio``, if any) to ``video``
    as MP4, and frame ``thumbnail_at`` to ``thumbnail`` as JPEG. ``after_frame(done)``
    runs after each frame is encoded; it may raise to stop."""
    pool = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="render")
    ahead: deque[Future[av.VideoFrame]] = deque()
    queued = 0
    try:
        with Mp4Writer(video, width, height, fps=FPS, audio=audio is not None) as writer:
            for k in range(frames):
                while queued < frames and len(ahead) < AHEAD:
                    ahead.append(pool.submit(render, queued))
                    queued += 1
                frame = ahead.popleft().result()
                if k == min(thumbnail_at, frames - 1):
                    picture = Image.fromarray(frame.to_ndarray(format="rgb24"))
                    picture.save(thumbnail, format="JPEG", quality=88)
                writer.write_frame(frame)
                if audio is not None:
                    # Audio is kept a block ahead of the video, so the two interleave.
                    due = (k + 1) * SAMPLE_RATE // FPS
                    while audio.position < min(audio.total, due + AUDIO_BLOCK):
                        writer.write_audio(audio.read(AUDIO_BLOCK))
                after_frame(k + 1)
            if audio is not None:
                while audio.position < audio.total:
                    writer.write_audio(audio.read(AUDIO_BLOCK))
    except BaseException:
        thumbnail.unlink(missing_ok=True)  # the writer removed its own file
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if audio is not None:
            audio.close()
