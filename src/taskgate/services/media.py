"""What a file is: sniffed from its bytes, then proven by decoding it.

The client's filename and Content-Type are never consulted. :func:`inspect_upload`
sniffs the magic number (puremagic) and then opens the file with the decoder of that
type (Pillow for images, PyAV for audio and video): a type outside the accepted list
is :class:`UnsupportedMediaType` (415); an accepted magic number whose bytes do not
decode, or an image past the pixel limit (a decompression bomb), is
:class:`InvalidFile` (422).

:func:`describe_output` says what a workflow's output file is, without refusing any.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import puremagic
from PIL import Image, UnidentifiedImageError

from taskgate.core.errors import InvalidFile, UnsupportedMediaType

#: Larger images are refused as decompression bombs (Pillow's own limit is higher).
MAX_IMAGE_PIXELS = 8192 * 8192
#: How many frames of an audio or video stream are decoded to prove it decodes.
PROBE_FRAMES = 8

# Pillow format → content type.
_IMAGES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
# Extensions puremagic names → the decoder that must open the file.
_SNIFFED: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jfif": "JPEG",
    ".jpe": "JPEG",
    ".webp": "WEBP",
    ".gif": "GIF",
    ".mp3": "av",
    ".wav": "av",
    ".flac": "av",
    ".ogg": "av",
    ".oga": "av",
    ".opus": "av",
    ".m4a": "av",
    ".mp4": "av",
    ".mov": "av",
    ".webm": "av",
}
_WEBM_CODECS = frozenset({"vp8", "vp9", "av1", "opus", "vorbis"})
_OGG_AUDIO = frozenset({"opus", "vorbis", "flac"})
_AUDIO_ONLY = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac"}


@dataclass(frozen=True, slots=True)
class MediaInfo:
    kind: str  # image, audio, video, or file
    content_type: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None


def sniff(path: Path) -> str | None:
    """The decoder the magic number calls for (a Pillow format or ``"av"``), or None
    when the bytes are of no accepted type."""
    try:
        matches = puremagic.magic_file(str(path))
    except (puremagic.PureError, ValueError, OSError):
        return None
    for match in matches:
        decoder = _SNIFFED.get(match.extension.lower())
        if decoder is not None:
            return decoder
    return None


def inspect_upload(path: Path) -> MediaInfo:
    """Sniff and decode an uploaded (or fetched) file; raise if it is not accepted."""
    decoder = sniff(path)
    if decoder is None:
        raise UnsupportedMediaType(
            "The file is not of an accepted type (PNG, JPEG, WebP, GIF; MP3, WAV, FLAC, "
            "OGG/Opus, M4A/AAC; MP4, WebM, MOV)."
        )
    if decoder == "av":
        return _probe_av(path)
    return _probe_image(path, decoder)


def _probe_image(path: Path, fmt: str) -> MediaInfo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=[fmt]) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise InvalidFile(
                        f"The image is {width}×{height}: more than {MAX_IMAGE_PIXELS} pixels."
                    )
                image.verify()
            # verify() leaves the image unusable; decode it whole from a fresh open.
            with Image.open(path, formats=[fmt]) as image:
                image.load()
                found = image.format or fmt
    except InvalidFile:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidFile("The image has too many pixels to decode safely.") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidFile(f"The file looks like {fmt} but does not decode.") from exc
    return MediaInfo("image", _IMAGES.get(found, _IMAGES[fmt]), width=width, height=height)


def _probe_av(path: Path) -> MediaInfo:
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return _classify(path, container)
    except (InvalidFile, UnsupportedMediaType):
        raise
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidFile("The file looks like audio or video but does not decode.") from exc


def _classify(path: Path, container: Any) -> MediaInfo:
    name = container.format.name
    videos = [s for s in container.streams.video if s.codec_context is not None]
    audios = [s for s in container.streams.audio if s.codec_context is not None]
    if not videos and not audios:
        raise InvalidFile("The file holds no audio or video stream.")
    codecs = {s.codec_context.name for s in (*videos, *audios)}
    if name in _AUDIO_ONLY:
        if videos:
            raise UnsupportedMediaType(f"A {name} file with a video stream is not accepted.")
        content_type = _AUDIO_ONLY[name]
    elif name == "ogg":
        if videos or not codecs <= _OGG_AUDIO:
            raise UnsupportedMediaType("Only Ogg audio (Opus, Vorbis, FLAC) is accepted.")
        content_type = "audio/ogg"
    elif name.startswith("mov,mp4"):
        video_type = "video/quicktime" if _major_brand(path) == b"qt  " else "video/mp4"
        content_type = video_type if videos else "audio/mp4"
    elif name == "matroska,webm":
        if not codecs <= _WEBM_CODECS:
            raise UnsupportedMediaType("Only WebM (VP8, VP9, AV1, Opus, Vorbis) is accepted.")
        content_type = "video/webm" if videos else "audio/webm"
    else:
        raise UnsupportedMediaType(f"The container {name!r} is not accepted.")
    stream = videos[0] if videos else audios[0]
    decoded = 0
    for frame in container.decode(stream):
        del frame
        decoded += 1
        if decoded >= PROBE_FRAMES:
            break
    if not decoded:
        raise InvalidFile("No frame of the file decodes.")
    duration = _duration(container, stream)
    if videos:
        video = videos[0].codec_context
        return MediaInfo("video", content_type, video.width, video.height, duration)
    return MediaInfo("audio", content_type, duration=duration)


def _major_brand(path: Path) -> bytes:
    with path.open("rb") as handle:
        head = handle.read(12)
    return head[8:12] if head[4:8] == b"ftyp" else b""


def _duration(container: Any, stream: Any) -> float | None:
    if container.duration is not None and container.duration > 0:
        return round(float(container.duration) / av.time_base, 3)
    if stream.duration is not None and stream.time_base is not None:
        return round(float(stream.duration * stream.time_base), 3)
    return None


def describe_output(path: Path, content_type: str) -> MediaInfo:
    """What a workflow wrote: probed when it is media we decode, else a plain file of
    the content type the workflow gave."""
    try:
        info = inspect_upload(path)
    except (InvalidFile, UnsupportedMediaType):
        return MediaInfo("file", content_type)
    return info
