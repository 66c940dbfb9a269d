"""How fast export cuts clips for whole-file trainers, against decoding the same frames alone.

``llava_star.media.clips.write_clip`` decodes a clip's frames and re-encodes them (H.264,
CRF 17, veryfast). The baseline decodes the same frames with PyAV and throws them away,
so the ratio is what the encoding and the file cost on top of reading. A source video
with motion and texture is generated (streamed, never held in memory), and clips of
``--clip-seconds`` are cut at evenly spread starts, as STAR or Charades-STA questions ask.

    python benchmarks/export_clips.py                      # 640x360, 30 fps, 60 s source, 12 clips of 8.5 s
    python benchmarks/export_clips.py --size 320x240 --clips 6

Prints clip seconds cut per wall-clock second and ``ratio cut/decode: X.XXx``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from llava_star.media.clips import write_clip
from llava_star.media.encode import VideoEncoder
from llava_star.media.video import clip_bounds


def make_source(path: Path, width: int, height: int, fps: float, seconds: float) -> Path:
    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:height, 0:width]
    with VideoEncoder(
        path, fps=fps, width=width, height=height, options={"preset": "veryfast", "crf": "23"}
    ) as encoder:
        for t in range(int(seconds * fps)):
            wave = np.sin((columns + 3 * t) / 17.0)[..., None] * np.cos((rows - 2 * t) / 23.0)[..., None]
            frame = (127 + 100 * wave * np.array([1.0, 0.7, 0.4])).astype(np.uint8)
            encoder.write(np.clip(frame + rng.integers(0, 24, size=frame.shape), 0, 255).astype(np.uint8))
    return path


def decode_only(path: Path, start: float, end: float) -> int:
    """The clip's frames decoded and dropped: what any reader of the range pays."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        first, stop = clip_bounds(int(stream.frames), fps, start, end)
        container.seek(int(first / fps / float(stream.time_base)), stream=stream, backward=True)
        count = 0
        for frame in container.decode(stream):
            position = round(frame.pts * float(stream.time_base) * fps)
            if position >= stop:
                break
            if position >= first:
                frame.to_ndarray(format="rgb24")
                count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the source")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the source")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--clip-seconds", type=float, default=8.5)
    args = parser.parse_args(argv)
    width, height = (int(side) for side in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        source = make_source(Path(folder) / "source.mp4", width, height, args.fps, args.seconds)
        starts = np.linspace(0, args.seconds - args.clip_seconds, args.clips)
        began = time.perf_counter()
        frames = sum(decode_only(source, start, start + args.clip_seconds) for start in starts)
        decode_seconds = time.perf_counter() - began
        began = time.perf_counter()
        for index, start in enumerate(starts):
            clip = write_clip(source, Path(folder) / f"clip{index}.mp4", start=start, end=start + args.clip_seconds)
            assert clip.frames is not None
        cut_seconds = time.perf_counter() - began
    video_seconds = args.clips * args.clip_seconds
    print(
        f"source {width}x{height} at {args.fps:g} fps; {args.clips} clips of {args.clip_seconds:g} s ({frames} frames)"
    )
    print(f"decode only: {decode_seconds:.2f} s ({video_seconds / decode_seconds:.1f} clip seconds per second)")
    print(f"write_clip:  {cut_seconds:.2f} s ({video_seconds / cut_seconds:.1f} clip seconds per second)")
    print(f"ratio cut/decode: {cut_seconds / decode_seconds:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
