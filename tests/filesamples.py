"""Small real media files for tests, made with Pillow and PyAV."""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

import av
import numpy as np
from PIL import Image

IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}
# container format, codec, sample format of the encoder
AUDIO_FORMATS = {
    "mp3": ("mp3", "libmp3lame", "s16p"),
    "wav": ("wav", "pcm_s16le", "s16"),
    "flac": ("flac", "flac", "s16"),
    "ogg": ("ogg", "libopus", "s16"),
    "m4a": ("ipod", "aac", "fltp"),
}
VIDEO_FORMATS = {
    "mp4": ("mp4", "libx264"),
    "webm": ("webm", "libvpx"),
    "mov": ("mov", "libx264"),
}


def image(fmt: str = "png", width: int = 32, height: int = 24) -> bytes:
    picture = Image.new("RGB", (width, height), (200, 30, 90))
    out = io.BytesIO()
    picture.save(out, IMAGE_FORMATS[fmt])
    return out.getvalue()


def audio(fmt: str = "wav", seconds: float = 0.5, rate: int = 48000) -> bytes:
    container_format, codec, sample_format = AUDIO_FORMATS[fmt]
    out = io.BytesIO()
    with av.open(out, "w", format=container_format) as container:
        stream: Any = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        samples = int(seconds * rate)
        t = np.arange(samples) / rate
        wave = 0.3 * np.sin(2 * np.pi * 440 * t)
        frame_size = 1152 if fmt == "mp3" else 960 if fmt == "ogg" else 1024
        pts = 0
        for start in range(0, samples, frame_size):
            chunk = wave[start : start + frame_size]
            if len(chunk) < frame_size and fmt in ("mp3", "ogg", "m4a"):
                chunk = np.pad(chunk, (0, frame_size - len(chunk)))
            data: Any
            if sample_format.startswith("s16"):
                data = (chunk * 32767).astype(np.int16).reshape(1, -1)
            else:
                data = chunk.astype(np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(data, format=sample_format, layout="mono")
            frame.sample_rate = rate
            frame.pts = pts
            frame.time_base = Fraction(1, rate)
            pts += data.shape[1]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def video(fmt: str = "mp4", seconds: float = 0.5, width: int = 64, height: int = 48) -> bytes:
    container_format, codec = VIDEO_FORMATS[fmt]
    out = io.BytesIO()
    fps = 10
    with av.open(out, "w", format=container_format) as container:
        video: Any = container.add_stream(codec, rate=fps)
        video.width = width
        video.height = height
        video.pix_fmt = "yuv420p"
        for i in range(max(1, int(seconds * fps))):
            pixels = np.full((height, width, 3), (i * 20) % 255, dtype=np.uint8)
            picture = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in video.encode(picture):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
    return out.getvalue()
