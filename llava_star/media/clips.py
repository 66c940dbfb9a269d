"""Clip files: a ``[start, end]`` range or a frame folder written once as an mp4.

Video-LLaVA, LLaVA-NeXT and LLaMA-Factory read a record's whole video file: they ignore
``start``/``end`` and cannot open a folder of frames (FineDiving). For them export writes
the part of the video a sample is about to its own file, under a media folder:

    Charades_v1_480/6H78U.mp4 [11.1, 19.6]  ->  MEDIA/Charades_v1_480/6H78U.mp4_clip11.1-19.6.mp4
    FINADivingWorldCup2021_Men3m_final_r1/0  ->  MEDIA/FINADivingWorldCup2021_Men3m_final_r1/0_frames.mp4

The clip holds exactly the frames ``[first, stop)`` that :func:`~llava_star.media.video.clip_bounds`
gives for the range, the frames the project's own decoder samples from, re-encoded (a
stream copy could only start at a keyframe) at the source's frame rate; a frame folder
plays at :data:`~llava_star.media.video.FRAME_FOLDER_FPS`. Audio is dropped: the targets
read frames only. Frames are decoded and encoded one at a time, so a long clip does not
have to fit in memory.

A clip is written to a temporary file and renamed into place, so a file under its final
name is complete: a rerun reuses it instead of cutting it again, and a killed export
leaves no half clip behind.

Planning comes first (:func:`playable_records`): each training record's video is resolved
under the video root (:class:`MediaLayout`), and a record about a clip or a frame folder
gets its clip file, cut once for every record that needs it (in ``jobs`` processes); the
record then points at the file as the trainer finds it, relative to the folder the
trainer is pointed at.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from llava_star.errors import VideoError
from llava_star.media.encode import VideoEncoder, available_video_codec
from llava_star.media.limits import check_frame_size
from llava_star.media.video import (
    FRAME_FOLDER_FPS,
    clip_bounds,
    frame_files,
    pyav_stream_length,
    read_frame_image,
    resolve_video_path,
)
from llava_star.optional import require

logger = logging.getLogger(__name__)

# Training data, unlike the synthetic test clips: visually lossless H.264 at a preset that
# keeps cutting fast; the encoder picks its own thread count.
CLIP_CODEC_OPTIONS = {"libx264": {"crf": "17", "preset": "veryfast"}, "mpeg4": {"qscale": "2"}}
# cutting clips takes a while on a real dataset: a log line every this many clips
_PROGRESS_EVERY = 1000


@dataclass(frozen=True)
class Clip:
    """A written (or reused) clip file; ``frames`` is None for a reused one (not reopened)."""

    path: Path
    cut: bool
    frames: int | None = None


def clip_name(video: str, start: float | None, end: float | None, *, folder: bool) -> PurePosixPath:
    """The clip's path under the media folder: the video's own path plus what was taken of it.

    Distinct videos and ranges give distinct names (a frame folder ``x`` and a file ``x``
    included); the same range of the same video gives the same name, which is what lets a
    rerun find it.

    >>> clip_name("Charades/6H78U.mp4", 11.1, 19.6, folder=False).as_posix()
    'Charades/6H78U.mp4_clip11.1-19.6.mp4'
    >>> clip_name("FineDiving/01/3", None, None, folder=True).as_posix()
    'FineDiving/01/3_frames.mp4'
    >>> clip_name("a.webm", None, 4.0, folder=False).as_posix()
    'a.webm_clip0.0-4.0.mp4'
    """
    name = PurePosixPath(video.replace("\\", "/"))
    parts = [name.name + ("_frames" if folder else "")]
    if start is not None or end is not None:
        parts.append(f"_clip{float(start or 0.0)!r}-{'end' if end is None else repr(float(end))}")
    return name.with_name("".join(parts) + ".mp4")


def remove_stale_parts(folders: Iterable[Path]) -> int:
    """Delete the ``.NAME.PID.part`` files a killed export left in ``folders``; returns how many.

    A part whose process is still alive (another export cutting into the same folder) stays.
    """
    removed = 0
    for folder in folders:
        for part in folder.glob(".*.part") if folder.is_dir() else ():
            pid = part.name.rsplit(".", 2)[-2]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            part.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_clip(
    source: Path, target: Path, *, start: float | None, end: float | None, folder_fps: float = FRAME_FOLDER_FPS
) -> Clip:
    """Write ``[start, end]`` of ``source`` (a video file or a frame folder) to ``target`` once.

    An existing ``target`` is reused as it is. Raises :class:`VideoError` naming the file
    for a source that is missing, unreadable, truncated or has no frame in the range.
    """
    if target.is_file() and target.stat().st_size > 0:
        return Clip(target, cut=False)
    if not source.exists():
        raise VideoError(f"{source}: video not found")
    target.parent.mkdir(parents=True, exist_ok=True)
    # created by the muxer (not mkstemp, whose files only their owner can read): a clip is
    # read by the training job, which may run as another user
    temporary = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        if source.is_dir():
            frames = _encode_frame_folder(source, temporary, start, end, folder_fps)
        else:
            frames = _encode_video_range(source, temporary, start, end)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return Clip(target, cut=True, frames=frames)


def _even(size: int) -> int:
    """yuv420p needs even sides: an odd side loses one pixel row or column to scaling."""
    return max(size - size % 2, 2)


def _encoder(path: Path, fps: float, width: int, height: int) -> VideoEncoder:
    codec = available_video_codec()
    return VideoEncoder(
        path,
        fps=fps,
        width=_even(width),
        height=_even(height),
        codec=codec,
        options=CLIP_CODEC_OPTIONS.get(codec),
        format="mp4",
    )


def _encode_frame_folder(folder: Path, target: Path, start: float | None, end: float | None, fps: float) -> int:
    files = frame_files(folder)
    first, stop = _bounds(folder, len(files), fps, start, end)
    shape = read_frame_image(files[first]).shape
    with _encoder(target, fps, shape[1], shape[0]) as encoder:
        for path in files[first:stop]:
            image = read_frame_image(path)
            if image.shape != shape:
                raise VideoError(f"{folder}: frames differ in size ({path.name} is {image.shape}, the first {shape})")
            encoder.write(image)
    return encoder.frames


def _bounds(source: Path, total: int, fps: float, start: float | None, end: float | None) -> tuple[int, int]:
    try:
        return clip_bounds(total, fps, start, end)
    except ValueError as error:
        raise VideoError(f"{source}: {error}") from None


def _encode_video_range(source: Path, target: Path, start: float | None, end: float | None) -> int:
    av = require("av", "cutting clips with PyAV")
    try:
        with av.open(str(source)) as container:
            if not container.streams.video:
                raise VideoError(f"{source}: no video stream")
            stream = container.streams.video[0]
            fps, total, declared = pyav_stream_length(source, container, stream)
            if total > 0:
                first, stop = _bounds(source, total, fps, start, end)
            else:  # nothing states the length: take the range as asked, up to the stream's end
                first = math.floor((start or 0.0) * fps)
                stop = sys.maxsize if end is None else max(math.ceil(end * fps), first + 1)
            width, height = stream.codec_context.width, stream.codec_context.height
            check_frame_size(source, width, height)
            with _encoder(target, fps, width, height) as encoder:
                for frame in _frames_in_range(source, container, stream, fps, first, stop):
                    encoder.write(frame)
                written = encoder.frames
                if written == 0:
                    raise VideoError(f"{source}: no frames in the clip (frames {first}-{stop} of {total or 'unknown'})")
                if declared and written < stop - first:
                    raise VideoError(f"{source}: truncated: the clip ends after {written} of {stop - first} frames")
    except av.error.FFmpegError as error:
        raise VideoError(f"{source}: cannot decode (corrupt or truncated): {error}") from None
    return written


def _frames_in_range(source: Path, container: Any, stream: Any, fps: float, first: int, stop: int) -> Iterator[Any]:
    """The decoded frames numbered ``first`` to ``stop - 1`` (numbers from timestamps, as read_frames counts)."""
    time_base = float(stream.time_base)
    first_pts = stream.start_time or 0
    seeked = first > 0
    if seeked:  # lands on the keyframe at or before the clip; earlier frames are skipped below
        container.seek(first_pts + int(first / fps / time_base), stream=stream, backward=True)
    position = -1
    for frame in container.decode(stream):
        if frame.pts is not None:
            position = round((frame.pts - first_pts) * time_base * fps)
        elif seeked:
            raise VideoError(f"{source}: frames carry no timestamps, so a clip cannot be cut from the middle")
        else:
            position += 1
        if position >= stop:
            return
        if position >= first:
            yield frame


# ---------------------------------------------------------------- planning: which record needs which file


@dataclass(frozen=True)
class MediaLayout:
    """Where a whole-file target finds the videos: the paths written are relative to ``video_folder``."""

    video_root: Path  # the generations' ``video`` paths are relative to it
    media_dir: Path  # clips are written here
    video_folder: Path

    def written_path(self, file: Path) -> str:
        """``file`` as the target will find it: relative to the folder it is pointed at."""
        return Path(os.path.relpath(file, self.video_folder.resolve())).as_posix()


@dataclass(frozen=True)
class MediaPlan:
    """What one record's video needs: a clip written from ``source``, the source used whole, or neither (``error``)."""

    source: Path | None
    clip: Path | None = None
    error: str | None = None


def plan_media(record: dict[str, Any], layout: MediaLayout) -> MediaPlan:
    video, start, end = record["video"], record.get("start"), record.get("end")
    try:
        source = resolve_video_path(layout.video_root, video)
    except VideoError as error:
        return MediaPlan(None, error=str(error))
    if source.is_dir() or start is not None or end is not None:
        return MediaPlan(source, clip=layout.media_dir / clip_name(video, start, end, folder=source.is_dir()))
    if source.is_file():
        return MediaPlan(source)
    return MediaPlan(source, error=f"{source}: video not found")


def write_clips(requests: dict[Path, tuple[Path, float | None, float | None]], jobs: int) -> dict[Path, Clip | str]:
    """Each clip (target -> source, start, end) written once: its :class:`Clip`, or why it could not be.

    ``jobs`` > 1 cuts in that many processes (started fresh, not forked: the cycle calls
    export in a process that may hold CUDA state). Only a ``VideoError`` is a clip's own
    failure; anything else stops the export.
    """
    outcomes: dict[Path, Clip | str] = {}

    def record(target: Path, outcome: Clip | str) -> None:
        outcomes[target] = outcome
        if len(outcomes) % _PROGRESS_EVERY == 0:
            logger.info("export: %d/%d clips ready", len(outcomes), len(requests))

    if jobs <= 1 or len(requests) < 2:  # a pool would only add its start-up
        for target, (source, start, end) in requests.items():
            try:
                record(target, write_clip(source, target, start=start, end=end))
            except VideoError as error:
                record(target, str(error))
        return outcomes
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {
            pool.submit(write_clip, source, target, start=start, end=end): target
            for target, (source, start, end) in requests.items()
        }
        for future in as_completed(futures):
            try:
                record(futures[future], future.result())
            except VideoError as error:
                record(futures[future], str(error))
    return outcomes


def _pointing_at(record: dict[str, Any], file: Path, source: Path, layout: MediaLayout) -> dict[str, Any]:
    """``record`` with its video at ``file`` as the target finds it; a clip says where it came from."""
    playable = {key: value for key, value in record.items() if key not in ("start", "end")}
    playable["video"] = layout.written_path(file)
    if file != source:
        playable["original_video"] = record["video"]
        playable.update({f"original_{key}": record[key] for key in ("start", "end") if record.get(key) is not None})
    return playable


@dataclass
class PlayableRecords:
    """Records pointing at files a whole-file trainer reads as meant, and what it took.

    ``media`` counts the clips ``cut`` now, ``reused`` from an earlier run and the videos
    used ``as_is``; ``skipped`` names each record left out, with the reason.
    """

    records: list[dict[str, Any]]
    media: Counter = field(default_factory=Counter)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def playable_records(records: list[dict[str, Any]], layout: MediaLayout, *, jobs: int = 1) -> PlayableRecords:
    """The records pointing at files their whole-file target reads as meant: the clip, not the video.

    A record whose video is missing or cannot be cut is left out, counted with the reason.
    """
    plans = [plan_media(record, layout) for record in records]
    requests = {
        plan.clip: (plan.source, record.get("start"), record.get("end"))
        for record, plan in zip(records, plans)
        if plan.clip is not None and plan.source is not None and plan.error is None
    }
    stale = remove_stale_parts({clip.parent for clip in requests})
    if stale:
        logger.info("export: removed %d unfinished clip(s) (.part) left by a killed export", stale)
    clips = write_clips(requests, jobs)
    result, counted = PlayableRecords([]), set()
    for record, plan in zip(records, plans):
        outcome = clips.get(plan.clip) if plan.clip is not None else None
        error = plan.error or (outcome if isinstance(outcome, str) else None)
        if error is not None:
            result.skipped.append({"id": record["id"], "video": record["video"], "reason": error})
            continue
        assert plan.source is not None
        if isinstance(outcome, Clip):
            result.media["cut" if outcome.cut and outcome.path not in counted else "reused"] += 1
            counted.add(outcome.path)
            result.records.append(_pointing_at(record, outcome.path, plan.source, layout))
        else:
            result.media["as_is"] += 1
            result.records.append(_pointing_at(record, plan.source, plan.source, layout))
    return result


def playable_stream(
    records: Iterable[dict[str, Any]], layout: MediaLayout, totals: PlayableRecords, *, jobs: int = 1, batch: int = 4096
) -> Iterator[dict[str, Any]]:
    """:func:`playable_records` a batch of records at a time, so an export of millions holds one batch.

    ``totals`` gathers the counts and the records left out. A clip two batches share is
    cut by the first and reused by the second, counted as :func:`playable_records` counts it.
    """
    records = iter(records)
    while chunk := list(itertools.islice(records, batch)):
        playable = playable_records(chunk, layout, jobs=jobs)
        totals.media.update(playable.media)
        totals.skipped.extend(playable.skipped)
        yield from playable.records


# ---------------------------------------------------------------- evaluation: one clip file per doc


def cached_clip(source: Path, video: str, start: float | None, end: float | None, cache_dir: Path) -> Path:
    """The file holding exactly ``[start, end]`` of ``source`` (a video or a frame folder), cut
    into ``cache_dir`` on first use and reused after, by later runs and by other ranks.

    A whole video file (no range) is its own clip: ``source`` comes back as it is. Writing is
    atomic (:func:`write_clip`), so ranks racing on one clip each finish a complete file and
    the last rename wins; none reads a half-written one.
    """
    if not source.is_dir() and start is None and end is None:
        return source
    target = cache_dir / clip_name(video, start, end, folder=source.is_dir())
    clip = write_clip(source, target, start=start, end=end)
    if clip.cut:
        logger.info("cut %s [%s, %s] to %s (%d frames)", source, start, end, target, clip.frames)
    return target
