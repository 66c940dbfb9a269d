"""Decode N frames of a video, a clip of it, or a folder of frames, for an LVLM processor.

transformers 5.23 decodes a video *path* only through torchcodec, so the project decodes
itself and hands processors arrays plus :meth:`Frames.metadata`. Frames are sampled
uniformly (the centre of N equal segments) within an optional ``[start, end]`` clip, and
only those frames are decoded: decord's ``get_batch`` or PyAV seeks, never a full pass.

Backends: ``decord`` by default; ``pyav`` when asked, or under ``"auto"`` when decord is
missing or fails on a file (decord rejects some streams that FFmpeg itself reads). A
folder of ``.jpg``/``.png`` frames (FineDiving ships videos this way) is a video whose
frames are the images in natural order (``2.jpg`` before ``10.jpg``), at
:data:`FRAME_FOLDER_FPS` unless ``folder_fps`` says otherwise.

Every failure, whatever the backend, is a :class:`~llava_star.errors.VideoError` that
names the file: missing, not a video, corrupt, truncated, no frames, a clip past the end.
One limit: decord counts frames by reading packets, so a webm/mkv cut short (no index
to contradict it) reads as a shorter video under decord; PyAV reports it as truncated.

:mod:`llava_star.media.encode` writes videos (synthetic clips, test media, exported clips).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from llava_star.errors import MissingDependencyError, VideoError
from llava_star.media.limits import check_declared_frame_size, check_frame_size, check_image_size, max_scan_frames
from llava_star.optional import require

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")
FRAME_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
# Video-STaR re-encodes FineDiving frame folders at 12 fps and derives its time labels
# from that rate, so a frame folder without a stated rate is read the same way.
FRAME_FOLDER_FPS = 12.0
# A container that states no frame count gets one estimated from its duration; decoding
# may then end this many frames early without the file counting as truncated.
_ESTIMATE_SLACK = 2
# PyAV seeks (to the keyframe before the target) only when the next wanted frame is at
# least this many seconds ahead; closer frames are cheaper to reach by decoding on.
_SEEK_AHEAD_SECONDS = 2.0

# (total_num_frames, fps) -> the frame indices to decode
IndexChooser = Callable[[int, float], np.ndarray]


class _ClipOutsideVideo(VideoError):
    """The sample asks for a clip the video does not have: no other decoder will help."""


@dataclass(frozen=True, eq=False)
class Frames:
    """Decoded frames of one video with what a processor needs to relate them to time.

    ``timestamps`` are ``indices / fps`` seconds from the start of the file (not of the
    clip), the same convention as transformers' ``VideoMetadata.timestamps``.
    """

    array: np.ndarray  # uint8 [N, H, W, 3], RGB
    timestamps: np.ndarray  # float64 [N], seconds
    indices: np.ndarray  # int64 [N], frame numbers in the whole file
    fps: float
    duration: float  # whole file, seconds
    path: str
    total_num_frames: int
    backend: str  # "decord", "pyav" or "frames" (an image folder)
    # the clip the frames were sampled from: its first frame and length in frames (the
    # whole file when no clip was asked for)
    clip_first_frame: int = 0
    clip_num_frames: int | None = None

    @property
    def num_frames(self) -> int:
        return int(self.array.shape[0])

    def metadata(self, clock: str = "clip") -> dict[str, Any]:
        """Keyword values for ``transformers.video_utils.VideoMetadata``, of the clip.

        Passed as ``video_metadata`` so processors that place frames in time see the real
        rate instead of a default of 24 fps. The model sees the clip, not the file: frame
        count, duration and indices are the clip's, so Qwen2.5-VL's ``second_per_grid_ts``
        (``sampled_fps`` = frames / clip frames x fps) is the clip's time scale. An 8.5 s
        clip of a 30 s file read as the whole file gave 7.5 s per grid instead of 2.13 s.

        ``clock`` says from where the frame indices count, and so the times (index / fps)
        that Qwen3-VL and Gemma 4 write before each frame: ``"clip"`` from the clip's first
        frame (0 s at its start), ``"source"`` from the file's (a clip from 10 s starts at
        10 s), as Qwen's own reader (qwen-vl-utils, decord and torchcodec backends) gives
        them. Count, duration and rate stay the clip's either way.
        """
        if clock not in ("clip", "source"):
            raise ValueError(f"clock: expected 'clip' or 'source', got {clock!r}")
        clip_frames = self.clip_num_frames or self.total_num_frames
        first = 0 if clock == "source" else self.clip_first_frame
        return {
            "total_num_frames": clip_frames,
            "fps": self.fps,
            "duration": clip_frames / self.fps,
            "width": int(self.array.shape[2]),
            "height": int(self.array.shape[1]),
            "video_backend": self.backend,
            "frames_indices": (self.indices - first).tolist(),
        }


def clip_bounds(total_num_frames: int, fps: float, start: float | None, end: float | None) -> tuple[int, int]:
    """The clip ``[start, end]`` seconds as frame numbers ``[first, stop)`` of the file.

    >>> clip_bounds(900, 30.0, 10.0, 18.5)
    (300, 555)
    """
    if total_num_frames < 1:
        raise ValueError("the video has no frames")
    first, stop = 0, total_num_frames
    if start is not None:
        if start > total_num_frames / fps:
            raise ValueError(f"clip start {start:g}s is after the end of the video ({total_num_frames / fps:g}s)")
        first = min(math.floor(start * fps), total_num_frames - 1)
    if end is not None:
        stop = min(math.ceil(end * fps), total_num_frames)
    return first, max(stop, first + 1)


def sample_indices(
    total_num_frames: int, fps: float, num_frames: int, start: float | None = None, end: float | None = None
) -> np.ndarray:
    """Indices of ``num_frames`` frames at the centres of equal segments of the clip.

    Centres rather than the clip's first and last frames, so a frame never sits on a cut
    at the clip's edge. A clip shorter than ``num_frames`` frames repeats frames: models
    take a fixed number. Raises ``ValueError`` for a clip that starts after the video ends.

    >>> sample_indices(100, 10.0, 4).tolist()
    [12, 37, 62, 87]
    >>> sample_indices(100, 10.0, 2, start=2.0, end=4.0).tolist()
    [25, 35]
    >>> sample_indices(3, 10.0, 4).tolist()
    [0, 1, 1, 2]
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    first, stop = clip_bounds(total_num_frames, fps, start, end)
    positions = first + (np.arange(num_frames) + 0.5) * (stop - first) / num_frames
    return np.minimum(np.floor(positions).astype(np.int64), stop - 1)


def read_frames(
    path: str | os.PathLike[str],
    num_frames: int,
    *,
    start: float | None = None,
    end: float | None = None,
    backend: str = "auto",
    folder_fps: float | None = None,
) -> Frames:
    """Decode ``num_frames`` frames sampled uniformly within ``[start, end]`` seconds.

    ``path`` is a video file (mp4, webm, avi, mkv, anything FFmpeg reads) or a folder of
    jpg/png frames, read at ``folder_fps`` (default :data:`FRAME_FOLDER_FPS`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"clip end {end} must be after its start {start}")
    path = Path(path)

    def choose(total_num_frames: int, fps: float) -> np.ndarray:
        try:
            return sample_indices(total_num_frames, fps, num_frames, start, end)
        except ValueError as error:
            raise _ClipOutsideVideo(f"{path}: {error}") from None

    frames = _decode(path, choose, backend, folder_fps)
    first, stop = clip_bounds(frames.total_num_frames, frames.fps, start, end)
    return dataclasses.replace(frames, clip_first_frame=first, clip_num_frames=stop - first)


def _decode(path: Path, choose: IndexChooser, backend: str, folder_fps: float | None) -> Frames:
    if path.is_dir():
        return _read_frame_folder(path, choose, folder_fps or FRAME_FOLDER_FPS)
    if not path.is_file():
        raise VideoError(f"{path}: video not found")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file")
    check_declared_frame_size(path)  # before decord, which decodes a frame when it opens a file
    if backend == "decord":
        return _read_with_decord(path, choose)
    if backend == "pyav":
        return _read_with_pyav(path, choose)
    try:
        return _read_with_decord(path, choose)
    except _ClipOutsideVideo:
        raise
    except (VideoError, MissingDependencyError) as decord_error:
        logger.debug("decord cannot read %s (%s); trying PyAV", path, decord_error)
        try:
            return _read_with_pyav(path, choose)
        except VideoError as pyav_error:
            raise VideoError(f"{pyav_error} (decord: {_without_path(decord_error, path)})") from None


def _without_path(error: Exception, path: Path) -> str:
    return str(error).removeprefix(f"{path}: ")


def _frames(path: Path, array: np.ndarray, indices: np.ndarray, total: int, fps: float, backend: str) -> Frames:
    return Frames(
        array=np.ascontiguousarray(array, dtype=np.uint8),
        timestamps=indices.astype(np.float64) / fps,
        indices=indices.astype(np.int64),
        fps=float(fps),
        duration=total / fps,
        path=str(path),
        total_num_frames=int(total),
        backend=backend,
    )


def decode_threads() -> int:
    """FFmpeg threads per decoder: ``LLAVA_STAR_DECODE_THREADS``, else 1.

    decord's default (0) starts a thread per core in every decoder, and a run has a
    decoder in each DataLoader worker of each rank: 8 ranks x 2 workers x 128 threads on
    a 128-core node. Parallelism comes from the workers; one thread each is enough.
    """
    value = os.environ.get("LLAVA_STAR_DECODE_THREADS", "1")
    try:
        threads = int(value)
    except ValueError:
        raise VideoError(f"LLAVA_STAR_DECODE_THREADS: expected an integer, got {value!r}") from None
    return max(threads, 0)


def _read_with_decord(path: Path, choose: IndexChooser) -> Frames:
    decord = require("decord", "decoding videos with decord")
    try:
        reader = decord.VideoReader(str(path), num_threads=decode_threads())
        total, fps = len(reader), float(reader.get_avg_fps())
    except (RuntimeError, decord.DECORDError) as error:
        raise VideoError(f"{path}: cannot open as a video (corrupt, truncated or no video stream): {error}") from None
    if total < 1 or not fps > 0:
        raise VideoError(f"{path}: no frames (decord counts {total} at {fps:g} fps)")
    indices = choose(total, fps)
    try:
        array = reader.get_batch(indices.tolist()).asnumpy()
    except (RuntimeError, IndexError, decord.DECORDError) as error:
        raise VideoError(f"{path}: cannot decode frames {indices.tolist()} (corrupt or truncated): {error}") from None
    return _frames(path, array, indices, total, fps, "decord")


def _read_with_pyav(path: Path, choose: IndexChooser) -> Frames:
    av = require("av", "decoding videos with PyAV")
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(path, container)
            fps, total, declared = pyav_stream_length(path, container, stream)
            measured = total > 0
            if measured:
                indices = choose(total, fps)
                by_index, decoded, last_frame = _decode_wanted(container, stream, sorted(set(indices.tolist())), fps)
            else:
                # nothing states the length: count the packets (demuxed, not decoded, up to a
                # cap), then decode once from the start, keeping only the wanted frames
                total = _count_packets(path, container, stream)
        if not measured:
            indices = choose(total, fps)
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                wanted = sorted(set(indices.tolist()))
                by_index, decoded, last_frame = _decode_wanted(container, stream, wanted, fps, seek=False)
    except av.error.FFmpegError as error:
        raise VideoError(f"{path}: cannot decode (corrupt or truncated): {error}") from None
    missing = [int(i) for i in indices if int(i) not in by_index]
    if missing:
        if declared or last_frame is None or decoded < total - _ESTIMATE_SLACK:
            raise VideoError(f"{path}: truncated: the stream ends after {decoded} of {total} frames")
        # the count was an estimate from the duration: the last frame stands in
        by_index.update({index: last_frame for index in missing})
    return _frames(path, np.stack([by_index[int(i)] for i in indices]), indices, total, fps, "pyav")


def _video_stream(path: Path, container: Any) -> Any:
    """The first video stream, its declared frame size within the cap."""
    if not container.streams.video:
        raise VideoError(f"{path}: no video stream")
    stream = container.streams.video[0]
    check_frame_size(path, int(stream.codec_context.width or 0), int(stream.codec_context.height or 0))
    return stream


def _count_packets(path: Path, container: Any, stream: Any) -> int:
    """Frames of a stream whose container states no length, counted by demuxing (no decoding).

    Memory stays flat; time is bounded by :func:`~llava_star.media.limits.max_scan_frames`.
    """
    cap = max_scan_frames()
    count = 0
    for packet in container.demux(stream):
        if packet.size:
            count += 1
            if count > cap:
                raise VideoError(
                    f"{path}: the container states no length and the stream has more than {cap:,} frames "
                    "(LLAVA_STAR_MAX_SCAN_FRAMES); remux it so its length is stated (ffmpeg -i IN -c copy OUT.mp4)"
                )
    if count == 0:
        raise VideoError(f"{path}: no frames")
    return count


def pyav_stream_length(path: Path, container: Any, stream: Any) -> tuple[float, int, bool]:
    """``(fps, frames, declared)`` of a PyAV video stream; ``frames`` is 0 when nothing states it.

    ``declared`` is False when the count is an estimate from the duration (webm, mkv).
    """
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    if not fps > 0:
        raise VideoError(f"{path}: the video stream states no frame rate")
    declared = int(stream.frames or 0)
    return fps, declared or _estimate_frame_count(container, stream, fps), bool(declared)


def _estimate_frame_count(container: Any, stream: Any, fps: float) -> int:
    """Frames implied by the stated duration (webm and mkv state no frame count)."""
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000  # AV_TIME_BASE
    else:
        return 0
    return round(seconds * fps)


def _decode_wanted(
    container: Any, stream: Any, wanted: list[int], fps: float, *, seek: bool = True
) -> tuple[dict[int, np.ndarray], int, np.ndarray | None]:
    """Decode the frames numbered ``wanted`` (sorted), seeking over long gaps unless ``seek`` is False.

    A frame's number comes from its timestamp, so a seek that lands on an earlier
    keyframe is harmless: frames before the target are decoded and dropped. Returns the
    frames found (those past the end of the stream are absent), and, for a stream that
    ended early, how many frames it had and its last frame.
    """
    time_base = float(stream.time_base)
    first_pts = stream.start_time or 0
    found: dict[int, np.ndarray] = {}
    frames = iter(container.decode(stream))
    position = -1  # number of the last decoded frame
    last = None
    seek_gap = max(_SEEK_AHEAD_SECONDS * fps, 1.0) if seek else math.inf
    for target in wanted:
        if target - position > seek_gap:
            container.seek(first_pts + int(target / fps / time_base), stream=stream, backward=True)
            frames = iter(container.decode(stream))
        for last in frames:
            position = position + 1 if last.pts is None else round((last.pts - first_pts) * time_base * fps)
            if position >= target:
                found[target] = last.to_ndarray(format="rgb24")
                break
        else:  # the stream ended before the target
            return found, position + 1, (None if last is None else last.to_ndarray(format="rgb24"))
    return found, position + 1, None


def _natural_key(path: Path) -> list[Any]:
    """Sort ``frame_2.jpg`` before ``frame_10.jpg``.

    >>> sorted(["f10.jpg", "f2.jpg"], key=lambda name: _natural_key(Path(name)))
    ['f2.jpg', 'f10.jpg']
    """
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_files(path: Path) -> list[Path]:
    """The frames of a frame folder in playing order; a ``VideoError`` when it has none."""
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES), key=_natural_key)
    if not files:
        raise VideoError(f"{path}: frame folder has no {'/'.join(sorted(FRAME_SUFFIXES))} frames")
    return files


def read_frame_image(path: Path) -> np.ndarray:
    """One frame of a frame folder as uint8 RGB [H, W, 3]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # the cap below decides, not Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_image_size(path, image, VideoError)
                return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise VideoError(f"{path}: cannot read frame: {error}") from None


def _read_frame_folder(path: Path, choose: IndexChooser, fps: float) -> Frames:
    files = frame_files(path)
    indices = choose(len(files), fps)
    images = {index: read_frame_image(files[index]) for index in sorted(set(indices.tolist()))}
    shapes = {array.shape for array in images.values()}
    if len(shapes) > 1:
        raise VideoError(f"{path}: frames differ in size {sorted(shapes)}")
    return _frames(path, np.stack([images[int(i)] for i in indices]), indices, len(files), fps, "frames")


@functools.lru_cache(maxsize=16)
def _real_root(video_root: str) -> Path:
    """The root with its symlinks resolved, once per root rather than once per sample."""
    return Path(video_root).resolve()


def resolve_video_path(video_root: str | os.PathLike[str], video: str) -> Path:
    """``video_root / video``, refusing names that would leave the root.

    Sample files come from users and downloads; a ``video`` of ``../../etc/passwd``,
    an absolute path, or a symlink pointing out of the root is refused with a
    ``VideoError``. Existence is not checked here (``read_frames`` reports a missing file).

    >>> resolve_video_path("/data/k700", "abseiling/x.mp4").as_posix()
    '/data/k700/abseiling/x.mp4'
    """
    pure = PurePath(video)
    if not video or pure.is_absolute() or video.startswith(("/", "\\")):
        raise VideoError(f"video {video!r}: expected a path relative to the video root {video_root}")
    if ".." in pure.parts or ".." in video.replace("\\", "/").split("/"):
        raise VideoError(f"video {video!r}: '..' would leave the video root {video_root}")
    root = Path(video_root)
    joined = root / pure
    real_root = _real_root(str(root))
    try:
        resolved = joined.resolve()
    except (RuntimeError, OSError, ValueError) as error:  # a symlink loop, a NUL byte
        raise VideoError(f"video {video!r}: cannot resolve under {video_root}: {error}") from None
    if not resolved.is_relative_to(real_root):
        raise VideoError(f"video {video!r}: resolves to {resolved}, outside the video root {real_root}")
    return joined
