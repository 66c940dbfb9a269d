"""Media limits checked before decoding (issue 27): declared frame size, image pixels, streams with no length.

The bombs are the real ones in miniature: the caps are lowered through their environment
variables so a 32x32 clip stands for a 16000x16000 one, and a 40-frame stream with no
stated length for a two-hour one.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from frame_numbers import decoded_frame_numbers, numbered_frames
from PIL import Image

from llava_star.errors import ImageError, VideoError
from llava_star.media import limits
from llava_star.media.images import read_image
from llava_star.media.video import read_frames


@pytest.mark.parametrize("backend", ["decord", "pyav", "auto"])
def test_a_frame_size_over_the_cap_is_refused_before_any_decoder_opens_it(make_video, monkeypatch, backend):
    path = make_video("bomb.mp4", num_frames=8, size=32)
    monkeypatch.setenv("LLAVA_STAR_MAX_FRAME_PIXELS", str(32 * 32 - 1))
    import decord

    def no_decoding(*args, **kwargs):
        raise AssertionError("decord opened a file over the frame cap")

    monkeypatch.setattr(decord, "VideoReader", no_decoding)
    with pytest.raises(VideoError, match=r"bomb\.mp4: frames of 32x32 \(1,024 pixels\) exceed the cap of 1,023"):
        read_frames(path, 8, backend=backend)


def test_a_frame_at_the_cap_is_read(make_video, monkeypatch):
    path = make_video("fits.mp4", num_frames=8, size=32)
    monkeypatch.setenv("LLAVA_STAR_MAX_FRAME_PIXELS", str(32 * 32))
    assert read_frames(path, 4, backend="pyav").array.shape == (4, 32, 32, 3)


def test_the_default_caps_admit_real_datasets_and_refuse_the_reported_bomb():
    assert limits.max_frame_pixels() >= 3840 * 2160 and limits.max_image_pixels() >= 3840 * 2160
    assert limits.max_frame_pixels() < 16000 * 16000
    with pytest.raises(VideoError, match="16000x16000"):
        limits.check_frame_size("bomb.mp4", 16000, 16000)


@pytest.mark.parametrize("value", ["many", "0", "-5"])
def test_a_bad_limit_in_the_environment_is_an_error_naming_it(monkeypatch, value):
    monkeypatch.setenv("LLAVA_STAR_MAX_FRAME_PIXELS", value)
    with pytest.raises(VideoError, match="LLAVA_STAR_MAX_FRAME_PIXELS"):
        limits.max_frame_pixels()


def _write_without_length(path, num_frames: int) -> None:
    """A Matroska stream written to a pipe-like sink: the muxer cannot go back to state a duration."""
    import av

    class Sink(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def write(self, data) -> int:
            file.write(data)
            return len(data)

    with open(path, "wb") as file, av.open(Sink(), "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "12", "threads": "1"}
        for array in numbered_frames(num_frames, 64):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))
        container.mux(stream.encode())


def test_a_stream_with_no_stated_length_is_counted_then_decoded_once_for_the_wanted_frames(tmp_path):
    # (memory: a two-hour 64x64 stream took 2.4 GB decoded whole, now 92 MB peak RSS;
    # the scan cap below bounds the time)
    import av

    path = tmp_path / "nolength.mkv"
    _write_without_length(path, 32)
    with av.open(str(path)) as container:  # the premise: nothing states the length
        stream = container.streams.video[0]
        assert not stream.frames and stream.duration is None and container.duration is None
    frames = read_frames(path, 4, backend="pyav")
    assert frames.total_num_frames == 32 and frames.indices.tolist() == [4, 12, 20, 28]
    assert decoded_frame_numbers(frames.array) == [4, 12, 20, 28]


def test_a_stream_with_no_stated_length_longer_than_the_scan_cap_fails_with_the_reason(tmp_path, monkeypatch):
    path = tmp_path / "endless.mkv"
    _write_without_length(path, 40)
    monkeypatch.setenv("LLAVA_STAR_MAX_SCAN_FRAMES", "30")
    with pytest.raises(VideoError, match=r"endless\.mkv: the container states no length .* more than 30 frames"):
        read_frames(path, 8, backend="auto")


def _png(path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)


def test_an_image_over_the_pixel_cap_is_refused_from_its_header(tmp_path, monkeypatch):
    _png(tmp_path / "big.png", (40, 30))
    monkeypatch.setenv("LLAVA_STAR_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageError, match=r"big\.png: an image of 40x30 \(1,200 pixels\) exceeds the cap of 1,000"):
        read_image(tmp_path / "big.png")
    monkeypatch.setenv("LLAVA_STAR_MAX_IMAGE_PIXELS", "1200")
    assert read_image(tmp_path / "big.png").shape == (30, 40, 3)


def test_a_frame_folder_image_over_the_cap_is_a_video_error(tmp_path, monkeypatch):
    for index in range(3):
        _png(tmp_path / "dive" / f"{index}.png", (40, 30))
    monkeypatch.setenv("LLAVA_STAR_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(VideoError, match=r"dive/\d\.png: an image of 40x30"):
        read_frames(tmp_path / "dive", 2)


def test_pillows_own_bomb_guard_in_a_frame_folder_is_a_video_error_not_a_crash(tmp_path, monkeypatch):
    _png(tmp_path / "dive" / "0.png", (40, 30))
    monkeypatch.setenv("LLAVA_STAR_MAX_IMAGE_PIXELS", str(10**9))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow errors at twice this
    with pytest.raises(VideoError, match=r"0\.png: cannot read frame"):
        read_frames(tmp_path / "dive", 1)
