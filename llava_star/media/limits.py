"""Limits a video or image must meet before it is decoded, so one file cannot exhaust a run.

A 751 KB mp4 can declare 16000x16000 frames: eight of them decoded are 6 GB of RGB, and
decord and PyAV took 11-17 GB to produce them. A stream whose container states no
length used to be decoded whole to count its frames (2.4 GB for a two-hour 64x64 stream).
Each limit is checked on what the file *declares* (the stream's header, the image's
header), before any frame is decoded, and a file over it is a ``VideoError`` /
``ImageError`` naming the file and the limit: a counted failure in ``generate`` and
``train``, like any unreadable video.

| limit | environment variable | default |
| --- | --- | --- |
| pixels per video frame (width x height) | ``LLAVA_STAR_MAX_FRAME_PIXELS`` | 7680 x 4320 (8K UHD) |
| pixels per still image or frame-folder image | ``LLAVA_STAR_MAX_IMAGE_PIXELS`` | 7680 x 4320 (8K UHD) |
| frames scanned in a stream that states no length | ``LLAVA_STAR_MAX_SCAN_FRAMES`` | 108000 (an hour at 30 fps) |

The defaults are far above Kinetics, STAR/Charades, SSv2, ActivityNet and FineDiving frames
(1080p at most) and keep the RGB of 8 frames under 1 GiB. Pillow's own guard
(``Image.MAX_IMAGE_PIXELS``, an error at twice its 89 MP) stays as a second line behind the
image cap; raising the cap above it does not lift Pillow's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llava_star.errors import LlavaStarError, MissingDependencyError, VideoError
from llava_star.optional import require

DEFAULT_MAX_FRAME_PIXELS = 7680 * 4320
DEFAULT_MAX_IMAGE_PIXELS = 7680 * 4320
DEFAULT_MAX_SCAN_FRAMES = 108_000


def _limit(variable: str, default: int) -> int:
    value = os.environ.get(variable)
    if value is None or value.strip() == "":
        return default
    try:
        limit = int(value)
    except ValueError:
        raise VideoError(f"{variable}: expected a positive integer, got {value!r}") from None
    if limit < 1:
        raise VideoError(f"{variable}: expected a positive integer, got {value!r}")
    return limit


def max_frame_pixels() -> int:
    """Pixels a video frame may declare: ``LLAVA_STAR_MAX_FRAME_PIXELS``, else 8K UHD."""
    return _limit("LLAVA_STAR_MAX_FRAME_PIXELS", DEFAULT_MAX_FRAME_PIXELS)


def max_image_pixels() -> int:
    """Pixels an image may declare: ``LLAVA_STAR_MAX_IMAGE_PIXELS``, else 8K UHD."""
    return _limit("LLAVA_STAR_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def max_scan_frames() -> int:
    """Frames counted in a stream that states no length: ``LLAVA_STAR_MAX_SCAN_FRAMES``."""
    return _limit("LLAVA_STAR_MAX_SCAN_FRAMES", DEFAULT_MAX_SCAN_FRAMES)


def check_frame_size(path: Path, width: int, height: int) -> None:
    """A ``VideoError`` naming ``path`` and the cap when a frame of ``width`` x ``height`` is over it."""
    cap = max_frame_pixels()
    if width * height > cap:
        raise VideoError(
            f"{path}: frames of {width}x{height} ({width * height:,} pixels) exceed the cap of {cap:,} pixels "
            "per frame (LLAVA_STAR_MAX_FRAME_PIXELS); the file is not decoded"
        )


def check_declared_frame_size(path: Path) -> None:
    """Check the first video stream's declared size from the header alone (PyAV), before any backend decodes.

    decord decodes a frame when it opens a file (650 MB for one 16000x16000 frame), and so
    does a plain ``av.open`` (FFmpeg's stream probe), so the header is read with PyAV told to
    skip every frame (``skip_frame=all``: 49 MB for the same file). A file PyAV cannot open
    is left to the backend, which names what is wrong with it.
    """
    try:
        av = require("av", "reading video headers with PyAV")
    except MissingDependencyError:
        return
    try:
        with av.open(str(path), stream_options=[{"skip_frame": "all"}]) as container:
            if not container.streams.video:
                return
            context = container.streams.video[0].codec_context
            width, height = int(context.width or 0), int(context.height or 0)
    except (av.error.FFmpegError, OSError, ValueError):
        return
    check_frame_size(path, width, height)


def check_image_size(path: Path, image: Any, error_type: type[LlavaStarError]) -> None:
    """An ``error_type`` naming ``path`` and the cap when the opened (not yet loaded) PIL image is over it."""
    cap = max_image_pixels()
    width, height = image.size
    if width * height > cap:
        raise error_type(
            f"{path}: an image of {width}x{height} ({width * height:,} pixels) exceeds the cap of {cap:,} pixels "
            "(LLAVA_STAR_MAX_IMAGE_PIXELS); it is not decoded"
        )
