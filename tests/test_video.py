"""Video decoding: sampling, both backends and the fallback, frame folders, bad files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from frame_numbers import decoded_frame_numbers, numbered_frames
from PIL import Image

from llava_star.errors import VideoError
from llava_star.media.video import (
    FRAME_FOLDER_FPS,
    read_frames,
    resolve_video_path,
    sample_indices,
)

DECODERS = ["decord", "pyav"]


@pytest.mark.parametrize(
    "total, fps, num_frames, start, end, expected",
    [
        (32, 8.0, 8, None, None, [2, 6, 10, 14, 18, 22, 26, 30]),
        (100, 10.0, 4, None, None, [12, 37, 62, 87]),
        (100, 10.0, 2, 2.0, 4.0, [25, 35]),
        (100, 10.0, 2, 9.5, None, [96, 98]),
        (100, 10.0, 2, None, 0.05, [0, 0]),  # a clip shorter than a frame still has one
        (100, 10.0, 2, 5.0, 50.0, [62, 87]),  # an end past the video is clamped
        (3, 10.0, 4, None, None, [0, 1, 1, 2]),  # fewer frames than asked: repeat
        (1, 25.0, 3, None, None, [0, 0, 0]),
    ],
)
def test_sample_indices(total, fps, num_frames, start, end, expected):
    assert sample_indices(total, fps, num_frames, start, end).tolist() == expected


@pytest.mark.parametrize("total, num_frames, start", [(10, 4, 12.0), (0, 4, None), (10, 0, None)])
def test_sample_indices_rejects_impossible_requests(total, num_frames, start):
    with pytest.raises(ValueError):
        sample_indices(total, 1.0, num_frames, start)


@pytest.mark.parametrize("backend", DECODERS + ["auto"])
def test_reads_the_sampled_frames_with_their_times(make_video, backend):
    path = make_video("clip.mp4", num_frames=32, fps=8.0)
    frames = read_frames(path, 8, backend=backend)
    assert frames.array.shape == (8, 32, 32, 3) and frames.array.dtype == np.uint8
    assert frames.indices.tolist() == [2, 6, 10, 14, 18, 22, 26, 30]
    assert decoded_frame_numbers(frames.array) == frames.indices.tolist()
    assert frames.timestamps.tolist() == pytest.approx([i / 8.0 for i in frames.indices])
    assert (frames.fps, frames.duration, frames.total_num_frames) == (8.0, 4.0, 32)
    assert frames.path == str(path)
    assert frames.backend == ("decord" if backend == "auto" else backend)
    assert frames.metadata() == {
        "total_num_frames": 32,
        "fps": 8.0,
        "duration": 4.0,
        "width": 32,
        "height": 32,
        "video_backend": frames.backend,
        "frames_indices": frames.indices.tolist(),
    }


@pytest.mark.parametrize("backend", DECODERS)
def test_clip_frames_come_from_inside_the_clip(make_video, backend):
    path = make_video("clip.mp4", num_frames=32, fps=8.0)
    frames = read_frames(path, 4, start=1.0, end=2.5, backend=backend)
    assert frames.indices.tolist() == [9, 12, 15, 18]
    assert decoded_frame_numbers(frames.array) == [9, 12, 15, 18]
    assert frames.timestamps.min() >= 1.0 and frames.timestamps.max() < 2.5
    assert frames.duration == 4.0  # of the file, not the clip


@pytest.mark.parametrize(
    "name, codec",
    [("clip.webm", "libvpx-vp9"), ("clip.avi", "mpeg4"), ("clip.mkv", "libx264"), ("clip.mov", "mpeg4")],
)
def test_containers_decode_alike_in_both_backends(make_video, name, codec):
    path = make_video(name, num_frames=20, fps=10.0, codec=codec, options={})
    by_backend = {backend: read_frames(path, 5, backend=backend) for backend in DECODERS}
    for frames in by_backend.values():
        assert frames.indices.tolist() == [2, 6, 10, 14, 18]
        assert decoded_frame_numbers(frames.array) == [2, 6, 10, 14, 18]
        assert frames.total_num_frames == 20 and frames.duration == pytest.approx(2.0)


def test_pyav_seeks_to_the_same_frames_as_decord(make_video):
    # 300 frames, each a flat colour that spells its number: red = 12 * (i % 20), green = 16 * (i // 20)
    numbers = np.arange(300)
    colours = np.stack([12 * (numbers % 20), 16 * (numbers // 20), np.full(300, 128)], axis=1)
    frames = np.broadcast_to(colours[:, None, None, :], (300, 32, 32, 3)).astype(np.uint8)
    # a keyframe every 30 frames, so the far targets are reached by seeking
    path = make_video("long.mp4", frames=frames, fps=30.0, options={"g": "30", "preset": "ultrafast"})
    decord_frames = read_frames(path, 6, start=2.0, end=9.0, backend="decord")
    pyav_frames = read_frames(path, 6, start=2.0, end=9.0, backend="pyav")
    assert pyav_frames.indices.tolist() == decord_frames.indices.tolist() == [77, 112, 147, 182, 217, 252]
    assert np.array_equal(pyav_frames.array, decord_frames.array)
    red, green = pyav_frames.array[:, 16, 16, 0].astype(int), pyav_frames.array[:, 16, 16, 1].astype(int)
    assert (np.round(red / 12) + 20 * np.round(green / 16)).tolist() == pyav_frames.indices.tolist()


def test_auto_falls_back_to_pyav_when_decord_cannot_read_the_file(make_video):
    # decord 0.6 ships an FFmpeg without an AV1 decoder; PyAV's reads it
    path = make_video("clip.webm", num_frames=16, fps=8.0, codec="libaom-av1", options={"cpu-used": "8"})
    with pytest.raises(VideoError, match="clip.webm"):
        read_frames(path, 4, backend="decord")
    frames = read_frames(path, 4)
    assert frames.backend == "pyav"
    assert decoded_frame_numbers(frames.array) == frames.indices.tolist() == [2, 6, 10, 14]


def test_auto_reads_the_intact_start_of_a_truncated_file_through_pyav(make_video):
    path = make_video("cut.mp4", num_frames=32, size=64, container_options={"movflags": "faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="cut.mp4"):
        read_frames(path, 4, backend="decord")  # decord indexes the whole file on open
    frames = read_frames(path, 2, start=0.0, end=1.0)
    assert frames.backend == "pyav" and decoded_frame_numbers(frames.array) == [2, 6]
    with pytest.raises(VideoError, match="cut.mp4"):
        read_frames(path, 8)  # the late frames are gone


def _truncate_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_FILES = {
    "missing": ("not found", lambda path: path.unlink()),
    "empty": ("empty file", lambda path: path.write_bytes(b"")),
    "garbage": ("cannot", lambda path: path.write_bytes(np.random.default_rng(0).bytes(4000))),
    "text": ("cannot", lambda path: path.write_text("this is not a video\n")),
    "truncated": ("cannot", _truncate_half),
}


@pytest.mark.parametrize("backend", DECODERS + ["auto"])
@pytest.mark.parametrize("damage", sorted(BAD_FILES))
def test_bad_files_raise_video_error_naming_the_file(make_video, backend, damage):
    reason, spoil = BAD_FILES[damage]
    path = make_video(f"{damage}.mp4", num_frames=32, size=64)
    spoil(path)
    with pytest.raises(VideoError, match=f"{damage}.mp4.*{reason}"):
        read_frames(path, 8, backend=backend)


@pytest.mark.parametrize("backend", DECODERS + ["auto"])
def test_a_video_without_frames_is_an_error(make_video, backend):
    path = make_video("none.mkv", frames=np.zeros((0, 32, 32, 3), np.uint8))
    with pytest.raises(VideoError, match="none.mkv"):
        read_frames(path, 4, backend=backend)


def test_pyav_reports_a_truncated_stream_without_an_index(make_video):
    path = make_video("cut.webm", num_frames=40, codec="libvpx-vp9", options={})
    _truncate_half(path)
    with pytest.raises(VideoError, match=r"cut.webm: truncated: the stream ends after \d+ of 40 frames"):
        read_frames(path, 8, backend="pyav")


@pytest.mark.parametrize("backend", DECODERS + ["auto"])
def test_a_clip_after_the_end_is_an_error(make_video, backend):
    path = make_video("clip.mp4", num_frames=16, fps=8.0)
    with pytest.raises(VideoError, match="clip.mp4: clip start 5s is after the end of the video") as error:
        read_frames(path, 4, start=5.0, end=6.0, backend=backend)
    assert "decord:" not in str(error.value)  # a bad request is not retried with another decoder


def test_bad_arguments_are_value_errors(make_video):
    path = make_video("clip.mp4")
    with pytest.raises(ValueError, match="backend"):
        read_frames(path, 4, backend="opencv")
    with pytest.raises(ValueError, match="end"):
        read_frames(path, 4, start=2.0, end=1.0)


def _write_frame_folder(folder, num_frames, suffix=".jpg", size=32):
    folder.mkdir()
    for number, pixels in enumerate(numbered_frames(num_frames, size), start=1):
        Image.fromarray(pixels).save(folder / f"img_{number}{suffix}", quality=95)
    return folder


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_frame_folder_is_read_in_natural_order_at_its_fps(tmp_path, suffix):
    folder = _write_frame_folder(tmp_path / "dive", 24, suffix)
    (folder / "notes.txt").write_text("not a frame")
    frames = read_frames(folder, 4)
    assert frames.backend == "frames" and frames.total_num_frames == 24
    # img_10 after img_9: numbered frames would be out of order under a plain sort
    assert decoded_frame_numbers(frames.array) == frames.indices.tolist() == [3, 9, 15, 21]
    assert frames.fps == FRAME_FOLDER_FPS and frames.duration == 24 / FRAME_FOLDER_FPS
    faster = read_frames(folder, 2, start=0.5, end=1.0, folder_fps=24.0)
    assert faster.fps == 24.0 and faster.indices.tolist() == [15, 21]
    assert faster.timestamps.tolist() == pytest.approx([15 / 24, 21 / 24])


def test_frame_folder_errors_name_the_folder_or_the_frame(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="empty: frame folder has no"):
        read_frames(empty, 4)
    folder = _write_frame_folder(tmp_path / "broken", 8)
    (folder / "img_3.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(VideoError, match="img_3.jpg: cannot read frame"):
        read_frames(folder, 8)
    mixed = _write_frame_folder(tmp_path / "mixed", 4)
    Image.new("RGB", (16, 16)).save(mixed / "img_4.jpg")
    with pytest.raises(VideoError, match="mixed: frames differ in size"):
        read_frames(mixed, 4)


def test_resolve_video_path_keeps_videos_under_the_root(tmp_path):
    root = tmp_path / "videos"
    (root / "class a").mkdir(parents=True)
    assert resolve_video_path(root, "class a/x.mp4") == root / "class a" / "x.mp4"
    os.symlink(root / "class a", root / "alias")
    assert resolve_video_path(root, "alias/x.mp4") == root / "alias" / "x.mp4"
    (tmp_path / "secret.mp4").write_bytes(b"")
    os.symlink(tmp_path / "secret.mp4", root / "link.mp4")
    os.symlink(tmp_path, root / "out")
    for escape, reason in [
        ("../secret.mp4", "'..'"),
        ("class a/../../secret.mp4", "'..'"),
        ("/etc/passwd", "relative"),
        ("", "relative"),
        ("link.mp4", "outside the video root"),
        ("out/secret.mp4", "outside the video root"),
    ]:
        with pytest.raises(VideoError, match=reason):
            resolve_video_path(root, escape)
