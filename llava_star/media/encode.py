"""Write videos: synthetic clips, test media and the clips export cuts.

H.264 through the libx264 that PyAV wheels ship (decord reads it), MPEG-4 part 2 where
libx264 is absent; frames are encoded one at a time, so a long clip is never held in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Self

import numpy as np

from llava_star.errors import MissingDependencyError
from llava_star.optional import require

# Encoders tried in order; both are read by decord 0.6 and PyAV.
VIDEO_CODECS = ("libx264", "mpeg4")
_CODEC_OPTIONS = {
    # near-lossless (colours survive for tiny models), fastest preset (no B-frames), and
    # one thread: small clips lose more to thread start-up than they gain
    "libx264": {"crf": "12", "preset": "ultrafast", "threads": "1"},
    "mpeg4": {"qscale": "2"},
}


def available_video_codec() -> str:
    """The first codec of :data:`VIDEO_CODECS` this PyAV build can encode with."""
    av = require("av", "writing videos with PyAV")
    for codec in VIDEO_CODECS:
        if codec in av.codecs_available:
            return codec
    raise MissingDependencyError(f"PyAV {av.__version__} has none of the encoders {', '.join(VIDEO_CODECS)}")


class VideoEncoder:
    """Encode frames one at a time, so a long clip never has to be held in memory.

    ``with VideoEncoder(path, fps=8.0, width=32, height=32) as encoder: encoder.write(array)``;
    frames are uint8 [H, W, 3] RGB arrays or PyAV frames, scaled to ``width`` x ``height``
    (both even, as yuv420p needs). ``format`` names the container when the file name does
    not (a temporary name). ``frames`` counts what was written.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float,
        width: int,
        height: int,
        codec: str | None = None,
        options: dict[str, str] | None = None,
        container_options: dict[str, str] | None = None,
        format: str | None = None,
    ) -> None:
        if width % 2 or height % 2 or width < 2 or height < 2:
            raise ValueError(f"frame height and width must be even for yuv420p, got {(height, width)}")
        self._av = require("av", "writing videos with PyAV")
        codec = codec or available_video_codec()
        self._rate = _frame_rate(fps)
        self._width, self._height = width, height
        self._container = self._av.open(str(path), "w", format=format, options=container_options or {})
        self._stream = self._container.add_stream(codec, rate=self._rate)
        self._stream.height, self._stream.width = height, width
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = dict(_CODEC_OPTIONS.get(codec, {}) if options is None else options)
        self.frames = 0

    def write(self, frame: Any) -> None:
        if isinstance(frame, np.ndarray):
            frame = self._av.VideoFrame.from_ndarray(frame, format="rgb24")
        frame = frame.reformat(width=self._width, height=self._height, format="yuv420p")
        # numbered in the encoder's time base: a decoded frame's own pts are in its source's
        frame.pts, frame.time_base = self.frames, 1 / self._rate
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        try:
            self._container.mux(self._stream.encode())
        finally:
            self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is None:
            self.close()
        else:  # the file is abandoned: close without flushing the encoder
            self._container.close()


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    *,
    fps: float = 8.0,
    codec: str | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode ``frames`` (uint8 [N, H, W, 3] RGB, even H and W) as a video file.

    ``codec`` defaults to :func:`available_video_codec`; ``options`` replace the codec's
    defaults and ``container_options`` reach the muxer (e.g. ``{"movflags": "faststart"}``).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frame height and width must be even for yuv420p, got {frames.shape[1:3]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {"fps": fps, "codec": codec, "options": options, "container_options": container_options}
    with VideoEncoder(path, width=frames.shape[2], height=frames.shape[1], **settings) as encoder:
        for frame in frames:
            encoder.write(frame)
    return path


def _frame_rate(fps: float) -> Any:
    """``fps`` as the exact fraction PyAV wants (25 -> 25/1, 29.97 -> 2997/100).

    >>> str(_frame_rate(12.5))
    '25/2'
    """
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
